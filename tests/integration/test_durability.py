"""Tasks survive their worker: kill -9 mid-stream and mid-tool-call, SIGTERM, and cancel.
Workers run as real processes sharing the database; side effects are counted in a file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import script, step
from tests.support_tools import payer_config
from warden.config import load_config
from warden.events.types import Event, EventType
from warden.runtime import Runtime
from warden.service.keys import Principal
from warden.service.tasks import Submission
from warden.store.tasks import TaskStatus
from warden.testing import FakeLLMServer

REPO = Path(__file__).resolve().parents[2]


class Cluster:
    """A shared database, worker processes started on demand, and an in-test runtime for
    submitting and watching (it runs no worker itself)."""

    def __init__(self, tmp: Path, fake_llm: FakeLLMServer, model: str, database_url: str) -> None:
        self.tmp = tmp
        self.side_effects = tmp / "side_effects.log"
        self.side_effects.touch()
        self.config_path = tmp / "warden.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "home": str(tmp / "home"),
                    "database_url": database_url,
                    **payer_config(
                        model,
                        fake_llm.url,
                        {
                            "lease_ttl": 2,
                            "poll_interval": 0.1,
                            "reap_interval": 0.3,
                            "cancel_poll_interval": 0.1,
                        },
                    ),
                }
            )
        )
        self.env = {**os.environ, "WARDEN_TEST_SIDE_EFFECTS": str(self.side_effects), "PYTHONPATH": str(REPO)}
        self.env.pop("WARDEN_CONFIG", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runtime: Runtime | None = None
        self.principal: Principal | None = None

    async def __aenter__(self) -> Cluster:
        os.environ["WARDEN_TEST_SIDE_EFFECTS"] = str(self.side_effects)
        self.runtime = await Runtime.open(load_config(self.config_path))
        key = await self.runtime.keys.create("acme", name="t", scopes=["admin"])
        self.principal = await self.runtime.keys.authenticate(key.secret)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert self.runtime is not None
        await self.runtime.close()

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "warden", "worker", "--config", str(self.config_path)],
            cwd=self.tmp,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    async def submit(self, text: str) -> str:
        assert self.runtime is not None and self.principal is not None
        task, _ = await self.runtime.tasks.submit(self.principal, Submission(agent="payer", input=text))
        return task.id

    async def watch(self, task_id: str) -> AsyncIterator[Event]:
        assert self.runtime is not None and self.principal is not None
        async for event in await self.runtime.tasks.events(self.principal, task_id):
            yield event

    async def wait_for(self, task_id: str, predicate: Any, within: float = 30.0) -> list[Event]:
        seen: list[Event] = []
        async with asyncio.timeout(within):
            async for event in self.watch(task_id):
                seen.append(event)
                if predicate(event):
                    return seen
        raise AssertionError(f"the stream ended without the awaited event; saw {[e.type for e in seen]}")

    def effects(self) -> list[str]:
        return self.side_effects.read_text().splitlines()


@pytest.fixture
async def cluster_factory(tmp_path: Path, fake_llm: FakeLLMServer, database_url: str) -> Any:
    def make(model_script: Any) -> Cluster:
        fake_llm.add_script(model_script)
        return Cluster(tmp_path, fake_llm, model_script.name, database_url)

    return make


def _unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


async def test_kill_9_mid_model_stream_resumes_elsewhere_without_repeating_the_charge(
    cluster_factory: Any,
) -> None:
    s = script(
        _unique("kill-stream"),
        step("Charging.", ("charge_card", {"amount": 42})),
        step("Now a long explanation " * 20, chunk_size=8, chunk_delay=0.05),
    )
    async with cluster_factory(s) as cluster:
        first = cluster.start_worker()
        task_id = await cluster.submit("charge 42")
        await cluster.wait_for(task_id, lambda e: e.type is EventType.MODEL_DELTA and e.data["step"] == 1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        cluster.start_worker()
        events = await cluster.wait_for(task_id, lambda e: e.is_terminal, within=60)
        assert events[-1].type is EventType.TASK_COMPLETED
        assert cluster.effects() == ["charge-start 42", "charge-done 42"]
        assert any(e.type is EventType.TASK_REQUEUED for e in events)
        assert cluster.runtime is not None and cluster.principal is not None
        record = await cluster.runtime.tasks.get(cluster.principal, task_id)
        assert record.attempt == 2


async def test_kill_9_mid_tool_call_never_reruns_a_non_idempotent_call(cluster_factory: Any) -> None:
    s = script(
        _unique("kill-tool"),
        step("Charging slowly.", ("charge_card", {"amount": 7, "seconds": 30})),
        step("Done, whatever happened."),
    )
    async with cluster_factory(s) as cluster:
        first = cluster.start_worker()
        task_id = await cluster.submit("charge 7")
        await cluster.wait_for(task_id, lambda e: e.type is EventType.TOOL_STARTED)
        async with asyncio.timeout(10):
            while "charge-start 7" not in cluster.effects():
                await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        cluster.start_worker()
        events = await cluster.wait_for(task_id, lambda e: e.is_terminal, within=60)
        assert events[-1].type is EventType.TASK_COMPLETED
        assert cluster.effects() == ["charge-start 7"]
        finished = [e for e in events if e.type is EventType.TOOL_FINISHED]
        assert finished[-1].data["is_error"] is True
        assert finished[-1].data["data"] == {"outcome": "unknown"}


async def test_kill_9_mid_idempotent_call_runs_it_again(cluster_factory: Any) -> None:
    s = script(
        _unique("kill-idem"), step("Looking up.", ("lookup", {"key": "k", "seconds": 30})), step("Found it.")
    )
    async with cluster_factory(s) as cluster:
        first = cluster.start_worker()
        task_id = await cluster.submit("look up k")
        await cluster.wait_for(task_id, lambda e: e.type is EventType.TOOL_STARTED)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        cluster.start_worker()
        async with asyncio.timeout(30):
            while cluster.effects().count("lookup k") < 2:
                await asyncio.sleep(0.05)
        assert cluster.effects() == ["lookup k", "lookup k"]


async def test_sigterm_releases_the_task_and_another_worker_finishes_it(cluster_factory: Any) -> None:
    s = script(
        _unique("sigterm"),
        step("Charging.", ("charge_card", {"amount": 5, "seconds": 1.0})),
        step("Explaining slowly " * 30, chunk_size=8, chunk_delay=0.05),
    )
    async with cluster_factory(s) as cluster:
        first = cluster.start_worker()
        task_id = await cluster.submit("charge 5")
        await cluster.wait_for(task_id, lambda e: e.type is EventType.TOOL_STARTED)
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
        # The running tool call was allowed to finish inside the grace period.
        assert cluster.effects() == ["charge-start 5", "charge-done 5"]
        assert time.monotonic() - started < 10
        assert cluster.runtime is not None and cluster.principal is not None
        record = await cluster.runtime.tasks.get(cluster.principal, task_id)
        assert record.status in (TaskStatus.QUEUED, TaskStatus.COMPLETED)
        cluster.start_worker()
        events = await cluster.wait_for(task_id, lambda e: e.is_terminal, within=60)
        assert events[-1].type is EventType.TASK_COMPLETED
        assert cluster.effects() == ["charge-start 5", "charge-done 5"]
        requeued = [e for e in events if e.type is EventType.TASK_REQUEUED]
        if record.status is TaskStatus.QUEUED:
            assert requeued and requeued[0].data["counted"] is False
