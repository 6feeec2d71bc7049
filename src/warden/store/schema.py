"""The tables. Times are epoch seconds as floats, taken from the database's clock
(`Database.now`) for anything two processes compare, so worker clock skew cannot break leases."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

agents = Table(
    "agents",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("spec", Json, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("agent_name", String(64), nullable=False),
    Column("multitask", String(16), nullable=False),
    Column("sandbox_id", String(40)),
    Column("history", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("session_id", String(40), ForeignKey("sessions.id")),
    Column("agent_name", String(64), nullable=False),
    Column("agent_version", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("input", Text, nullable=False),
    Column("output", Json),
    Column("error", Json),
    Column("metadata", Json, nullable=False),
    Column("usage", Json, nullable=False),
    Column("idempotency_key", String(200)),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_owner", String(120)),
    Column("lease_until", Float),
    Column("available_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("run_seconds", Float, nullable=False, default=0.0),
    # W3C traceparent of the request that submitted the task (tracing on), continued by workers.
    Column("traceparent", String(64)),
    UniqueConstraint("tenant_id", "idempotency_key"),
    Index("ix_tasks_tenant_created", "tenant_id", "created_at"),
    Index("ix_tasks_session_created", "session_id", "created_at"),
    Index("ix_tasks_status_available", "status", "available_at"),
    Index("ix_tasks_status_lease", "status", "lease_until"),
)

events = Table(
    "events",
    metadata,
    Column("task_id", String(40), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("type", String(40), nullable=False),
    Column("data", Json, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("task_id", String(40), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("step", Integer, primary_key=True, autoincrement=False),
    Column("state", Json, nullable=False),
    Column("created_at", Float, nullable=False),
)

journal = Table(
    "journal",
    metadata,
    Column("task_id", String(40), ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("data", Json),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
)

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), index=True),
    Column("session_id", String(40), index=True),
    Column("template", String(64), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("state", String(24), nullable=False),
    Column("workspace", Text, nullable=False),
    Column("image_path", Text),
    Column("metadata", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Column("expires_at", Float),
    Index("ix_sandboxes_template_state", "template", "state"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("sandbox_id", String(40), nullable=False),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("template", String(64), nullable=False),
    Column("image_path", Text, nullable=False),
    Column("workspace_copy", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)

mcp_servers = Table(
    "mcp_servers",
    metadata,
    Column("name", String(64), primary_key=True),
    # The negotiated era (legacy or modern) of a server configured as `auto`.
    Column("era", String(16)),
    Column("updated_at", Float, nullable=False),
)

mcp_tools = Table(
    "mcp_tools",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("name", String(255), primary_key=True),
    # The definition last listed (name, description, inputSchema, annotations), its hash and
    # the poisoning rules it trips; the pin is approved_sha256: the tool runs only while the
    # listed definition hashes to it.
    Column("definition", Json, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("flags", Json, nullable=False),
    Column("approved_definition", Json),
    Column("approved_sha256", String(64)),
    Column("approved_by", String(200)),
    Column("approved_at", Float),
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("task_id", String(40), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", String(40)),
    Column("agent_name", String(64), nullable=False),
    # The call awaiting a human: the step, its journal key (``tool:N:i``), the model's call id,
    # the tool and its arguments as the model gave them (placeholders, never PII).
    Column("step", Integer, nullable=False),
    Column("call_key", String(64), nullable=False),
    Column("call_id", String(200), nullable=False),
    Column("tool", String(255), nullable=False),
    Column("arguments", Json, nullable=False),
    Column("rule", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    # pending → approved | denied | expired; decided once, by a conditional update.
    Column("status", String(16), nullable=False),
    Column("default_decision", String(16), nullable=False),
    Column("decision_reason", Text),
    Column("edited_arguments", Json),
    Column("decided_by", String(200)),
    Column("decided_at", Float),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    UniqueConstraint("task_id", "call_key", name="uq_approvals_task_call"),
    Index("ix_approvals_tenant_status", "tenant_id", "status", "created_at"),
    Index("ix_approvals_pending_expiry", "status", "expires_at"),
)

# Sealed PII vaults (AES-GCM, bound to their scope id): one per session, or per task when a task
# has no session. ``entries`` lets a writer skip re-sealing a vault that has not grown.
pii_vaults = Table(
    "pii_vaults",
    metadata,
    Column("scope_id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("entries", Integer, nullable=False),
    Column("blob", LargeBinary, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The audit log: one hash chain per tenant. ``audit_heads`` holds each chain's newest seq and
# hash; appends lock that row, so seqs are gap-free, and verification can tell a truncated tail.
audit_heads = Table(
    "audit_heads",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(255)),
    Column("outcome", String(32)),
    Column("rule", String(200)),
    Column("reason", Text),
    # Canonical JSON text, not JSON/JSONB: the bytes hashed are the bytes stored.
    Column("data", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Which HMAC key sealed the entry ("" for plain SHA-256): a fingerprint, not the key.
    Column("key_id", String(16), nullable=False),
    Index("ix_audit_log_tenant_ts", "tenant_id", "ts"),
    Index("ix_audit_log_tenant_action_seq", "tenant_id", "action", "seq"),
)
