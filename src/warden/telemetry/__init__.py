"""Observability: Prometheus metrics (`metrics`, `queue_stats`, `http`), OpenTelemetry traces
following the GenAI conventions (`tracing`, `genai`), and logs carrying task and trace ids
(`logs`). Names are re-exported lazily: ``warden.config`` imports `config` from here, and a
CLI command that never serves should not pay for importing Prometheus and OpenTelemetry."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TelemetryConfig": "warden.telemetry.config",
    "REGISTRY": "warden.telemetry.metrics",
    "QueueGauges": "warden.telemetry.queue_stats",
    "HttpTelemetry": "warden.telemetry.http",
    "TracedProvider": "warden.telemetry.genai",
    "TracedTool": "warden.telemetry.genai",
    "counted_policy": "warden.telemetry.genai",
    "configure_tracing": "warden.telemetry.tracing",
    "install_tracer_provider": "warden.telemetry.tracing",
    "invoke_agent_span": "warden.telemetry.tracing",
    "current_traceparent": "warden.telemetry.tracing",
    "bind_task": "warden.telemetry.logs",
    "JsonFormatter": "warden.telemetry.logs",
    "worker_endpoints": "warden.telemetry.worker_http",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'warden.telemetry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
