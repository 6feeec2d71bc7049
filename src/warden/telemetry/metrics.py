"""Prometheus metrics: the process's counters and histograms, on one registry that
``/metrics`` renders together with the gauges read from the database at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
"""Warden's own registry (not prometheus_client's global one), so embedding applications and
tests can tell Warden's series from theirs."""

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TASK_SECONDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)

TASK_DURATION = Histogram(
    "warden_task_duration_seconds",
    "Seconds from submission to a terminal status, by agent and final status.",
    ["agent", "status"],
    buckets=_TASK_SECONDS,
    registry=REGISTRY,
)
TASK_RUN_SECONDS = Histogram(
    "warden_task_run_seconds",
    "Seconds tasks spent running in workers (all attempts), by agent and final status.",
    ["agent", "status"],
    buckets=_TASK_SECONDS,
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "warden_model_tokens",
    "Tokens models read (type=input) and wrote (type=output), by configured model name.",
    ["model", "type"],
    registry=REGISTRY,
)
MODEL_CALL_DURATION = Histogram(
    "warden_model_call_duration_seconds",
    "Seconds per model call, streaming included, by model and outcome (ok, error).",
    ["model", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
TOOL_CALL_DURATION = Histogram(
    "warden_tool_call_duration_seconds",
    "Seconds per tool call, by tool and outcome (ok, error).",
    ["tool", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
POLICY_DECISIONS = Counter(
    "warden_policy_decisions",
    "Governance decisions on tool calls, by verdict (allow, deny, ask; error: the policy raised).",
    ["verdict"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "warden_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "warden_http_request_duration_seconds",
    "Seconds from request to the end of the response body (streams: until they close), by method and route.",
    ["method", "route"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
PRUNED_ROWS = Counter(
    "warden_pruned",
    "Rows (and snapshots) deleted by retention, by kind.",
    ["kind"],
    registry=REGISTRY,
)


def observe_task_end(agent: str, status: str, duration: float | None, run_seconds: float | None) -> None:
    if duration is not None and duration >= 0:
        TASK_DURATION.labels(agent, status).observe(duration)
    if run_seconds is not None and run_seconds >= 0:
        TASK_RUN_SECONDS.labels(agent, status).observe(run_seconds)
