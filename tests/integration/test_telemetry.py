"""Observability of a real task run: /metrics after it, the span tree it leaves (OTel's
in-memory exporter), the trace carried from the submitting request through the queue to the
worker, and who may read /metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MakeConfig, script, step
from tests.integration.test_api_tasks import finished, submit
from warden.telemetry.tracing import install_tracer_provider
from warden.testing.harness import WardenHarness

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _calculator_script(name: str):  # type: ignore[no-untyped-def]
    return script(name, step("Let me compute.", ("calculator", {"expression": "6*7"})), step("It is 42."))


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    install_tracer_provider(provider)
    try:
        yield exporter
    finally:
        install_tracer_provider(None)


async def test_metrics_show_a_finished_task(make_config: MakeConfig, database_url: str) -> None:
    model = f"metrics-{uuid.uuid4().hex[:8]}"
    config = make_config(script=_calculator_script(model), database_url=database_url)
    async with WardenHarness(config) as harness, harness.client() as client:
        before = _samples((await client.get("/metrics")).text)
        task = await finished(client, (await submit(client, input="6*7?"))["id"])
        assert task["status"] == "completed"
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("warden_task_duration_seconds_count", agent="tester", status="completed") == 1
    assert grew("warden_model_tokens_total", model=model, type="input") > 0
    assert grew("warden_model_tokens_total", model=model, type="output") > 0
    assert grew("warden_model_call_duration_seconds_count", model=model, outcome="ok") == 2
    assert grew("warden_tool_call_duration_seconds_count", tool="calculator", outcome="ok") == 1
    assert grew("warden_policy_decisions_total", verdict="allow") >= 1
    assert grew("warden_http_requests_total", method="POST", route="/v1/tasks", status="202") == 1
    assert _value(after, "warden_database_up") == 1.0
    for status in ("queued", "held", "running", "awaiting_approval"):
        assert ("warden_queue_depth", frozenset({("status", status)})) in after
    assert _value(after, "warden_queue_depth", status="running") == 0


async def test_a_task_run_leaves_a_span_tree_continuing_the_submitters_trace(
    make_config: MakeConfig, spans: InMemorySpanExporter
) -> None:
    model = f"spans-{uuid.uuid4().hex[:8]}"
    config = make_config(script=_calculator_script(model))
    async with WardenHarness(config) as harness, harness.client() as client:
        headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "6*7?"}, headers=headers)
        assert response.status_code == 202
        task = await finished(client, response.json()["id"])
        assert task["status"] == "completed"
    # The harness has stopped its workers, so every span of the run has ended.
    finished_spans = spans.get_finished_spans()
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in finished_spans:
        by_name.setdefault(span.name, []).append(span)

    (submit_span,) = by_name["POST /v1/tasks"]
    (agent_span,) = by_name["invoke_agent tester"]
    chats = by_name[f"chat {model}"]
    (tool_span,) = by_name["execute_tool calculator"]
    assert len(chats) == 2

    trace_id = int(CLIENT_TRACE, 16)
    for span in (submit_span, agent_span, tool_span, *chats):
        assert span.context is not None
        assert span.context.trace_id == trace_id
    assert submit_span.parent is not None and submit_span.parent.span_id == int(CLIENT_SPAN, 16)
    assert agent_span.parent is not None and submit_span.context is not None
    assert agent_span.parent.span_id == submit_span.context.span_id
    assert agent_span.context is not None
    for child in (tool_span, *chats):
        assert child.parent is not None and child.parent.span_id == agent_span.context.span_id

    assert agent_span.attributes is not None
    assert agent_span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent_span.attributes["gen_ai.agent.name"] == "tester"
    assert agent_span.attributes["warden.task.id"] == task["id"]
    first = min(chats, key=lambda s: s.start_time or 0)
    assert first.attributes is not None
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == model
    assert first.attributes["gen_ai.usage.input_tokens"] > 0
    assert first.attributes["gen_ai.usage.output_tokens"] > 0
    assert tool_span.attributes is not None
    assert tool_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_span.attributes["gen_ai.tool.name"] == "calculator"
    assert tool_span.attributes["gen_ai.tool.call.id"]
    # Message content is not captured unless telemetry.capture_content is on.
    for span in finished_spans:
        attributes = dict(span.attributes or {})
        assert "gen_ai.input.messages" not in attributes
        assert "gen_ai.output.messages" not in attributes
        assert not any("6*7" in str(value) for value in attributes.values())


async def test_content_is_on_chat_spans_only_when_enabled(
    make_config: MakeConfig, spans: InMemorySpanExporter
) -> None:
    model = f"content-{uuid.uuid4().hex[:8]}"
    config = make_config(script=_calculator_script(model), telemetry={"capture_content": True})
    async with WardenHarness(config) as harness, harness.client() as client:
        await finished(client, (await submit(client, input="what is 6*7?"))["id"])
    chats = [s for s in spans.get_finished_spans() if s.name == f"chat {model}"]
    assert chats and all("what is 6*7?" in str((s.attributes or {})["gen_ai.input.messages"]) for s in chats)


async def test_metrics_on_a_public_bind_need_the_token_or_an_admin_key(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_METRICS_TOKEN", "scrape-me")
    config = make_config(server={"host": "0.0.0.0"}, telemetry={"metrics_token_env": "TEST_METRICS_TOKEN"})
    # No worker: the task stays queued, and the queue gauge shows it.
    async with WardenHarness(config, workers=0) as harness, harness.client() as client:
        await submit(client, input="wait for a worker")
        reader = await harness.key_for("default", ["tasks:read"])
        async with harness.client(reader) as tenant_client:
            assert (await tenant_client.get("/metrics")).status_code == 403
        async with harness.client("wrong") as stranger:
            assert (await stranger.get("/metrics")).status_code == 401
        async with harness.client("scrape-me") as scraper:
            scraped = await scraper.get("/metrics")
        admin = await client.get("/metrics")
    assert scraped.status_code == 200
    assert admin.status_code == 200
    assert _value(_samples(scraped.text), "warden_queue_depth", status="queued") == 1
