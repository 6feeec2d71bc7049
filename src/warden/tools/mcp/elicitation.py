"""Answers to servers' elicitation requests (also those embedded in a 2026-07-28
input-required result, which the SDK resolves through the same callback). Agents run
unattended, with no person at the MCP layer, so Warden answers by policy: ``decline``, or
``accept_defaults`` — the requested schema's defaults, declining when a required field has none."""

from __future__ import annotations

import logging
from typing import Any

import mcp_types as types
from mcp.client.session import ClientRequestContext, ElicitationFnT

log = logging.getLogger("warden.mcp")

Value = str | int | float | bool | list[str] | None


def schema_defaults(schema: dict[str, Any]) -> dict[str, Value] | None:
    """The defaults of a form's properties; None when a required property has no default."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    content: dict[str, Value] = {}
    for name, spec in properties.items():
        if isinstance(spec, dict) and "default" in spec:
            content[name] = spec["default"]
    required = schema.get("required")
    if isinstance(required, list) and any(name not in content for name in required):
        return None
    return content


async def _decline(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    log.info("declined an elicitation request (policy decline): %.200s", params.message)
    return types.ElicitResult(action="decline")


async def _accept_defaults(
    context: ClientRequestContext, params: types.ElicitRequestParams
) -> types.ElicitResult:
    if isinstance(params, types.ElicitRequestFormParams):
        content = schema_defaults(dict(params.requested_schema))
        if content is not None:
            return types.ElicitResult(action="accept", content=content)
    log.info("declined an elicitation request (no defaults to accept): %.200s", params.message)
    return types.ElicitResult(action="decline")


def elicitation_policy(policy: str) -> ElicitationFnT:
    return _accept_defaults if policy == "accept_defaults" else _decline
