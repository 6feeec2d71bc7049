"""Governance: the Gate every model and tool call passes through (`warden.governance.gate`), its
policy engine (`.policy`), approvals (`.approvals`), the PII vault (`.pii`) and the audit log
(`.audit`). Nothing is imported here, so `warden.config` can use the policy's config models."""
