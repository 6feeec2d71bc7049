"""Optional Cedar policies (``cedarpy``, imported only when configured), asked when no YAML rule
matched: a permit allows (or asks, with ``@decision("ask")``), a forbid denies, no policy
applying leaves the call to the defaults, and any evaluation error denies (fail closed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warden.governance.decision import Decision, Verdict
from warden.governance.policy.config import CedarConfig
from warden.governance.policy.errors import PolicyError

ACTION = {"type": "Warden::Action", "id": "call"}


def _import_cedarpy() -> Any:
    try:
        import cedarpy
    except ImportError:
        raise PolicyError(
            "policy.cedar is configured but the cedarpy package is not installed: "
            "pip install 'warden[cedar]' (or remove policy.cedar)"
        ) from None
    return cedarpy


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the Cedar {what}: {exc}") from None


@dataclass(frozen=True)
class CedarPolicies:
    """Parsed Cedar policies, their annotations, and the static entities."""

    cedarpy: Any
    policy_set: Any
    annotations: dict[str, dict[str, str]]
    entities: tuple[dict[str, Any], ...]
    source: str

    @classmethod
    def load(cls, config: CedarConfig) -> CedarPolicies:
        """Read and check the files; `PolicyError` when cedarpy is missing or a file is invalid."""
        cedarpy = _import_cedarpy()
        source = str(config.policies)
        text = _read(config.policies, "policies")
        try:
            policy_set = cedarpy.PolicySet.from_str(text)
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise PolicyError(f"{source}: invalid Cedar policies: {exc}") from None
        annotations = {pid: dict(p.get("annotations") or {}) for pid, p in est["staticPolicies"].items()}
        for pid, notes in annotations.items():
            if notes.get("decision", "allow") not in ("allow", "ask"):
                raise PolicyError(f'{source}: policy {pid}: @decision must be "allow" or "ask"')
        if config.schema_file is not None:
            schema = _read(config.schema_file, "schema")
            result = cedarpy.validate_policies(text, schema)
            if not result.validation_passed:
                errors = "; ".join(str(e) for e in result.errors)
                raise PolicyError(f"{source}: the Cedar policies do not match {config.schema_file}: {errors}")
        entities: list[dict[str, Any]] = []
        if config.entities is not None:
            try:
                entities = json.loads(_read(config.entities, "entities"))
            except json.JSONDecodeError as exc:
                raise PolicyError(f"{config.entities}:{exc.lineno}: invalid JSON: {exc.msg}") from None
            if not isinstance(entities, list):
                raise PolicyError(f"{config.entities}: expected a JSON list of entities")
        return cls(cedarpy, policy_set, annotations, tuple(entities), source)

    def _name(self, policy_id: str) -> str:
        return "cedar:" + self.annotations.get(policy_id, {}).get("id", policy_id)

    def decide(self, request: Any) -> Decision | None:
        """A decision for a `PolicyRequest`, or None when no Cedar policy applies."""
        agent = {"type": "Warden::Agent", "id": request.agent}
        tenant = {"type": "Warden::Tenant", "id": request.tenant_id}
        tool = {"type": "Warden::Tool", "id": request.tool}
        entities = [
            {"uid": agent, "attrs": {"tenant": request.tenant_id}, "parents": [tenant]},
            {"uid": tenant, "attrs": {}, "parents": []},
            {
                "uid": tool,
                "attrs": {"side_effects": request.side_effects, "idempotent": request.idempotent},
                "parents": [],
            },
            *self.entities,
        ]
        cedar_request = {
            "principal": agent,
            "action": ACTION,
            "resource": tool,
            "context": {
                "tenant": request.tenant_id,
                "task_id": request.task_id,
                "arguments": request.arguments,
            },
        }
        try:
            result = self.cedarpy.is_authorized(cedar_request, self.policy_set, entities)
        except (ValueError, TypeError) as exc:
            return Decision(Verdict.DENY, "cedar", f"Cedar could not evaluate the call: {exc}; denied")
        errors = list(result.diagnostics.errors)
        if errors:
            # Cedar skips a policy that errors, even a forbid: deny rather than let that open a door.
            return Decision(Verdict.DENY, "cedar", f"Cedar could not evaluate the call: {errors[0]}; denied")
        reasons = list(result.diagnostics.reasons)
        if not reasons:
            return None
        name = self._name(reasons[0])
        reason = self.annotations.get(reasons[0], {}).get("reason", f"Cedar policy {name} applied")
        if not result.allowed:
            return Decision(Verdict.DENY, name, reason)
        ask = [pid for pid in reasons if self.annotations.get(pid, {}).get("decision") == "ask"]
        if ask:
            return Decision(Verdict.ASK, self._name(ask[0]), self.annotations[ask[0]].get("reason", reason))
        return Decision(Verdict.ALLOW, name, reason)
