"""`kill -9` in a running cluster (2 API and 3 worker processes, PostgreSQL, Redis): a worker
mid-stream and mid-tool-call (another worker resumes; no finished tool call runs again), and an
API process while clients stream (they resume on the other with Last-Event-ID, missing and
repeating nothing). The processes start once for the module; a killed worker is replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.cluster._cluster import WardenCluster, assert_gap_free
from tests.cluster._models import by_input
from tests.cluster._services import RedisServer
from tests.cluster.conftest import fresh_database
from warden.testing import FakeLLMServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLMServer
) -> AsyncIterator[WardenCluster]:
    model = f"cluster-kills-{uuid.uuid4().hex[:8]}"
    fake_llm.add_function(model, by_input())
    redis = RedisServer()
    try:
        await redis.start()
        async with fresh_database() as database_url:
            tmp: Path = tmp_path_factory.mktemp("kills")
            async with WardenCluster(
                tmp, database_url=database_url, redis_url=redis.url, model_url=fake_llm.url, model=model
            ) as running:
                for _ in range(3):
                    running.start_worker()
                await running.start_apis(2)
                yield running
    finally:
        redis.close()


async def wait_until(predicate: Any, within: float, what: str) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


async def test_kill_9_of_a_worker_mid_model_stream_another_resumes_and_clients_see_each_event_once(
    cluster: WardenCluster,
) -> None:
    task_id = await cluster.submit("stream 42")
    owners: list[str] = []
    mid_stream = asyncio.Event()

    def watch(event: dict[str, Any]) -> None:
        if event["type"] == "task.started":
            owners.append(event["data"]["worker"])
        if event["type"] == "model.delta" and event["data"].get("step") == 1:
            mid_stream.set()

    streaming = asyncio.create_task(cluster.stream(task_id, apis=[1, 0], on_event=watch))
    async with asyncio.timeout(60):
        await mid_stream.wait()
    cluster.kill(cluster.worker_by_id(owners[-1]))
    cluster.start_worker()
    events = await streaming

    assert_gap_free(events)
    assert events[-1]["type"] == "task.completed"
    assert owners[-1] != owners[-2]
    assert [line for line in cluster.effects() if line.endswith(" 42")] == [
        "charge-start 42",
        "charge-done 42",
    ]
    assert [e["seq"] for e in events] == [e.seq for e in await cluster.log(task_id)]


async def test_kill_9_of_a_worker_mid_tool_call_never_runs_a_finished_call_again(
    cluster: WardenCluster,
) -> None:
    task_id = await cluster.submit("tool 70")
    owners: list[str] = []
    streaming = asyncio.create_task(
        cluster.stream(
            task_id,
            on_event=lambda e: owners.append(e["data"]["worker"]) if e["type"] == "task.started" else None,
        )
    )
    await wait_until(lambda: "charge-start 71" in cluster.effects(), 60, "the second charge started")
    cluster.kill(cluster.worker_by_id(owners[-1]))
    cluster.start_worker()
    events = await streaming

    assert_gap_free(events)
    assert events[-1]["type"] == "task.completed"
    mine = [line for line in cluster.effects() if line.split()[-1] in ("70", "71")]
    assert mine == ["charge-start 70", "charge-done 70", "charge-start 71"]
    finished = [e for e in events if e["type"] == "tool.finished"]
    assert [f["data"]["is_error"] for f in finished] == [False, True]
    assert finished[-1]["data"]["data"] == {"outcome": "unknown"}


async def test_kill_9_of_an_api_process_clients_resume_on_the_other_without_gaps_or_repeats(
    cluster: WardenCluster,
) -> None:
    task_ids = [await cluster.submit(f"slow {i}", api=1) for i in range(4)]
    deltas = [0] * len(task_ids)

    def counter(i: int) -> Any:
        def count(event: dict[str, Any]) -> None:
            if event["type"] == "model.delta":
                deltas[i] += 1

        return count

    # Every client streams from API 0 and moves to API 1 when its connection breaks.
    streams = [
        asyncio.create_task(cluster.stream(t, apis=[0, 1], on_event=counter(i)))
        for i, t in enumerate(task_ids)
    ]
    await wait_until(lambda: all(n >= 2 for n in deltas), 60, "every client is mid-stream")
    cluster.kill(cluster.apis[0].proc)
    results = await asyncio.gather(*streams)

    for task_id, events in zip(task_ids, results, strict=True):
        assert_gap_free(events)
        assert events[-1]["type"] == "task.completed"
        assert [e["seq"] for e in events] == [e.seq for e in await cluster.log(task_id)]
