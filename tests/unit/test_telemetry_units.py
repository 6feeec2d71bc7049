"""Retention durations, the audit log's exclusion, who may read /metrics, and JSON log lines
that carry the task and trace they were written for."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from warden.retention.config import RetentionConfig, parse_duration
from warden.telemetry.config import TelemetryConfig
from warden.telemetry.logs import ContextFilter, JsonFormatter, bind_task


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("45m", 2700), ("10s", 10), ("2w", 1209600), (90, 90)],
)
def test_durations_read_as_seconds(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30x", "-1d", "0", "", "d", True])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked elsewhere
        parse_duration(bad)


def test_the_audit_log_cannot_be_given_a_ttl() -> None:
    with pytest.raises(ValidationError, match="audit log is never pruned"):
        RetentionConfig.model_validate({"tasks": "30d", "audit": "1y"})


def test_retention_is_off_until_a_ttl_is_set() -> None:
    assert not RetentionConfig().enabled
    assert RetentionConfig.model_validate({"events": "7d"}).enabled


def test_metrics_are_open_on_loopback_and_closed_elsewhere_by_default() -> None:
    config = TelemetryConfig()
    assert config.metrics_open_for("127.0.0.1")
    assert config.metrics_open_for("::1")
    assert config.metrics_open_for("localhost")
    assert not config.metrics_open_for("0.0.0.0")
    assert TelemetryConfig(metrics_public=True).metrics_open_for("0.0.0.0")
    assert not TelemetryConfig(metrics_public=False).metrics_open_for("127.0.0.1")


def test_the_otlp_endpoint_comes_from_config_or_the_standard_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert TelemetryConfig().resolved_otlp_traces_url() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    assert TelemetryConfig().resolved_otlp_traces_url() == "http://127.0.0.1:4318/v1/traces"
    assert (
        TelemetryConfig(otlp_endpoint="http://c:4318").resolved_otlp_traces_url() == "http://c:4318/v1/traces"
    )


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("warden.worker", logging.WARNING, __file__, 1, message, None, None)
    ContextFilter().filter(record)
    return record


def test_json_log_lines_carry_the_task_and_trace_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    bind_task("task_01ABC")
    try:
        with tracer.start_as_current_span("work") as span:
            line = JsonFormatter().format(_record("lost the lease"))
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        bind_task(None)
    entry = json.loads(line)
    assert entry["message"] == "lost the lease"
    assert entry["level"] == "WARNING"
    assert entry["task_id"] == "task_01ABC"
    assert entry["trace_id"] == trace_id


def test_json_log_lines_outside_a_task_have_no_task_id() -> None:
    entry = json.loads(JsonFormatter().format(_record("started")))
    assert "task_id" not in entry
    assert "trace_id" not in entry
