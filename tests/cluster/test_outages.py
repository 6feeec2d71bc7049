"""Cluster mode through outages, with real processes: PostgreSQL restarted under load, Redis
going away mid-run (and coming back), and workers whose clocks are an hour off. In every case
no task is lost, no finished tool call runs twice, and every task ends."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.cluster._cluster import assert_gap_free
from tests.cluster._models import by_input
from tests.cluster._services import PostgresServer, RedisServer
from tests.cluster.conftest import MakeCluster
from warden.service.tasks import Submission
from warden.store.tasks import TaskStatus
from warden.testing import FakeLLMServer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(predicate: Any, within: float, what: str) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


def charges(amounts: range) -> list[str]:
    return sorted(f"charge-{phase} {i}" for i in amounts for phase in ("start", "done"))


@pytest.fixture
async def throwaway_postgres() -> AsyncIterator[PostgresServer]:
    server = PostgresServer()
    try:
        await server.init()
        await server.start()
        yield server
    finally:
        server.close()


async def test_a_postgresql_restart_under_load_loses_no_task_and_runs_no_charge_twice(
    make_cluster: MakeCluster,
    throwaway_postgres: PostgresServer,
    redis_server: RedisServer,
    fake_llm: FakeLLMServer,
) -> None:
    model = unique("cluster-pg-restart")
    fake_llm.add_function(model, by_input(charge_seconds=0.3))
    async with make_cluster(
        model, database_url=throwaway_postgres.url, redis_url=redis_server.url, max_attempts=10
    ) as cluster:
        cluster.start_worker()
        cluster.start_worker()
        await cluster.start_apis(1)
        task_ids = [await cluster.submit(f"charge {i}", key=f"k{i}") for i in range(12)]
        await wait_until(lambda: len(cluster.effects()) >= 4, 60, "charges are under way")

        await throwaway_postgres.stop("fast")
        # Clients keep submitting through the outage, retrying with their idempotency keys.
        late = [
            asyncio.create_task(cluster.submit(f"charge {i}", key=f"k{i}", within=60)) for i in range(12, 18)
        ]
        await asyncio.sleep(1.5)  # the length of the outage
        await throwaway_postgres.start()
        task_ids += await asyncio.gather(*late)

        records = await cluster.wait_terminal(task_ids, within=90)
        assert len(set(task_ids)) == 18
        assert [r.status for r in records] == [TaskStatus.COMPLETED] * 18
        effects = cluster.effects()
        for i in range(18):
            # Each charge ran once; one cut off by the outage stays unfinished, never repeated.
            assert effects.count(f"charge-start {i}") == 1, effects
            assert effects.count(f"charge-done {i}") <= 1, effects


async def test_redis_going_away_mid_run_falls_back_to_polling_and_loses_nothing(
    make_cluster: MakeCluster, cluster_db: str, redis_server: RedisServer, fake_llm: FakeLLMServer
) -> None:
    model = unique("cluster-redis-down")
    fake_llm.add_function(model, by_input(charge_seconds=0.2))
    async with make_cluster(model, database_url=cluster_db, redis_url=redis_server.url) as cluster:
        cluster.start_worker()
        cluster.start_worker()
        await cluster.start_apis(1)
        before = [await cluster.submit(f"charge {i}") for i in range(4)]
        streams = [asyncio.create_task(cluster.stream(t)) for t in before]
        await wait_until(lambda: len(cluster.effects()) >= 1, 60, "work is under way")

        await redis_server.kill()
        # No API call fails while Redis is down: each submit is accepted at the first try.
        during = []
        async with cluster.client(0) as client:
            for i in range(4, 8):
                response = await client.post("/v1/tasks", json={"agent": "payer", "input": f"charge {i}"})
                assert response.status_code == 202, response.text
                during.append(response.json()["id"])
        streams += [asyncio.create_task(cluster.stream(t)) for t in during]
        results = await asyncio.gather(*streams)

        await redis_server.start()
        api_log = cluster.apis[0].log
        await wait_until(lambda: "answers again" in api_log.read_text(errors="replace"), 30, "reconnected")
        after = [await cluster.submit(f"charge {i}") for i in range(8, 10)]
        results += await asyncio.gather(*(cluster.stream(t) for t in after))

        for events in results:
            assert_gap_free(events)
            assert events[-1]["type"] == "task.completed"
        assert sorted(cluster.effects()) == charges(range(10))


async def test_workers_whose_clocks_are_an_hour_off_neither_steal_nor_keep_leases(
    make_cluster: MakeCluster, cluster_db: str, fake_llm: FakeLLMServer
) -> None:
    model = unique("cluster-skew")
    # Each charge outlasts a third of the lease, so leases are renewed while it runs. The lease
    # is longer than elsewhere: a worker's first task can stall its loop for seconds on a busy
    # 2-core machine (imports), and this test is about clocks, not stalls.
    fake_llm.add_function(model, by_input(charge_seconds=4.0))
    worker = {"concurrency": 2, "lease_ttl": 10}
    async with make_cluster(model, database_url=cluster_db, redis_url=None, worker=worker) as cluster:
        for offset in ("3600", "-3600"):
            cluster.start_worker(
                module="tests.cluster._skewed_warden", env={"WARDEN_TEST_CLOCK_OFFSET": offset}
            )
        assert cluster.runtime is not None
        principal = await cluster.runtime.keys.authenticate(cluster.key)
        task_ids = []
        for i in range(6):
            record, _ = await cluster.runtime.tasks.submit(
                principal, Submission(agent="payer", input=f"charge {i}")
            )
            task_ids.append(record.id)

        records = await cluster.wait_terminal(task_ids, within=90)
        assert [r.status for r in records] == [TaskStatus.COMPLETED] * 6
        # Lease expiry is computed by the database: no reaper took a task from a live worker.
        assert [r.attempt for r in records] == [1] * 6
        assert sorted(cluster.effects()) == charges(range(6))
        owners = set()
        for task_id in task_ids:
            owners |= {e.data["worker"] for e in await cluster.log(task_id) if e.type.value == "task.started"}
        assert len({owner.split(":")[1] for owner in owners}) == 2, "both skewed workers ran tasks"
