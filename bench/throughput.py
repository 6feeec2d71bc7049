"""Throughput of 1-step tasks (the scripted model answers at once, no tool) on this machine.

Service layer: one process holds the runtime and a worker (concurrency 32); 4 submitter
coroutines put N tasks (1,500; 300 with --quick) through ``TaskService.submit`` while the
worker runs them. Throughput = N ÷ (last task's ``finished_at`` - first submit), on SQLite and
on PostgreSQL. The database is polled every 100 ms for the number of ended tasks (and of
running ones, to see the worker's concurrency); ``finished_at`` comes from the database's
clock, so polling does not round it.

HTTP: a Warden server (API + 1 worker of concurrency 32, uvloop, as ``warden serve``) runs in
its own process on SQLite; this process POSTs 1,000 tasks (300 with --quick) with 32 concurrent
keep-alive httpx connections. Same clock: first POST → last ``finished_at``.

Baseline (the floor the database allows, measured in the same run): a plain loop that, per
task, inserts one row of the same shape and commits, then updates its status and commits —
stdlib sqlite3 with Warden's pragmas (WAL, synchronous=NORMAL), and asyncpg on PostgreSQL.

    python -m bench.throughput [--quick] [--no-postgres] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench._common import (
    AGENT,
    Target,
    asyncpg_url,
    bench_config,
    cpu_seconds,
    machine_info,
    parser,
    pg_database,
    profiled,
    ratio,
    run,
    sqlite_url,
    submit,
    use_postgres,
    write_result,
    write_script,
)
from bench._server import ServerProcess
from warden.runtime import Runtime
from warden.store.schema import tasks as tasks_table
from warden.store.tasks import TERMINAL_STATUSES
from warden.worker.worker import Worker

NAME = "throughput"
TARGET_TPS = 200.0
CONCURRENCY = 32
SUBMITTERS = 4
HTTP_CONNECTIONS = 32


class Progress:
    """Polls the tasks table: how many ended, how many run at once (peak), the last finished_at."""

    def __init__(self, engine: AsyncEngine, total: int) -> None:
        self.engine = engine
        self.total = total
        self.peak_running = 0
        self.statuses: dict[str, int] = {}

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(tasks_table.c.status, func.count()).group_by(tasks_table.c.status)
            )
            return {r[0]: int(r[1]) for r in rows}

    async def wait_all_ended(self, timeout: float) -> bool:
        """False when not every task ended within ``timeout`` (the figure then counts those that did)."""
        terminal = {s.value for s in TERMINAL_STATUSES}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.statuses = await self.counts()
            self.peak_running = max(self.peak_running, self.statuses.get("running", 0))
            if self.ended(terminal) >= self.total:
                return True
            await asyncio.sleep(0.1)
        return False

    def ended(self, terminal: set[str] | None = None) -> int:
        terminal = terminal or {s.value for s in TERMINAL_STATUSES}
        return sum(n for s, n in self.statuses.items() if s in terminal)

    async def span(self) -> tuple[float, float]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.min(tasks_table.c.created_at), func.max(tasks_table.c.finished_at))
                )
            ).one()
            return float(row[0]), float(row[1])


def _report(
    n: int, t_first: float, t_submitted: float, last_finished: float, progress: Progress
) -> dict[str, Any]:
    elapsed = last_finished - t_first
    return {
        "tasks": n,
        "tasks_per_s": round(n / elapsed, 1),
        "elapsed_s": round(elapsed, 3),
        "submit_rate_per_s": round(n / (t_submitted - t_first), 1),
        "statuses": progress.statuses,
        "peak_running_seen": progress.peak_running,
    }


async def service_layer(database_url: str, home: Path, n: int, profile: str | None) -> dict[str, Any]:
    script = write_script(home / "answer.yaml", [{"text": "done"}])
    config = bench_config(home, database_url, script, worker={"concurrency": CONCURRENCY})
    runtime = await Runtime.open(config)
    # Its own engine: the runtime's SQLite connections belong to its threads.
    progress_engine = create_async_engine(database_url)
    try:
        key = await runtime.keys.create("default", name="bench", scopes=["admin"])
        principal = await runtime.keys.authenticate(key.secret)
        progress = Progress(progress_engine, n)
        worker = Worker(runtime, concurrency=CONCURRENCY)
        counter = itertools.count()

        async def submitter() -> None:
            while (i := next(counter)) < n:
                await submit(runtime, principal, f"throughput task {i}")

        with profiled(profile):
            running = asyncio.create_task(worker.run())
            try:
                t_first = time.time()
                async with asyncio.timeout(100):
                    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
                t_submitted = time.time()
                if not await progress.wait_all_ended(timeout=100):
                    print(f"  only {progress.ended()} of {n} tasks ended within 100 s; counting those")
            finally:
                worker.request_stop()
                async with asyncio.timeout(30):
                    await running
        _, last_finished = await progress.span()
        return _report(n, t_first, t_submitted, last_finished, progress)
    finally:
        await progress_engine.dispose()
        await runtime.close()


async def over_http(home: Path, n: int) -> dict[str, Any]:
    database_url = sqlite_url(home / "warden.db")
    script = write_script(home / "answer.yaml", [{"text": "done"}])
    config = bench_config(home, database_url, script, worker={"concurrency": CONCURRENCY})
    async with ServerProcess(config, workers=1) as server:
        engine = create_async_engine(database_url)
        try:
            progress = Progress(engine, n)
            counter = itertools.count()
            limits = httpx.Limits(
                max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS
            )
            headers = {"Authorization": f"Bearer {server.key}"}
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, limits=limits, timeout=30
            ) as client:
                # Open the connections before the clock starts.
                await asyncio.gather(*(client.get("/healthz") for _ in range(HTTP_CONNECTIONS)))
                errors: list[str] = []

                async def poster() -> None:
                    while (i := next(counter)) < n:
                        resp = await client.post(
                            "/v1/tasks", json={"agent": AGENT, "input": f"http task {i}"}
                        )
                        if resp.status_code != 202:
                            errors.append(f"{resp.status_code} {resp.text[:200]}")

                cpu_server0, cpu_client0 = cpu_seconds(server.pid), cpu_seconds(os.getpid())
                t_first = time.time()
                async with asyncio.timeout(100):
                    await asyncio.gather(*(poster() for _ in range(HTTP_CONNECTIONS)))
                t_submitted = time.time()
            if errors:
                raise RuntimeError(f"{len(errors)} submissions failed, e.g. {errors[0]}")
            if not await progress.wait_all_ended(timeout=100):
                print(f"  only {progress.ended()} of {n} tasks ended within 100 s; counting those")
            _, last_finished = await progress.span()
            # Both processes share this 2-core machine: their CPU per task bounds the rate.
            cpu = {
                "server_ms_per_task": round((cpu_seconds(server.pid) - cpu_server0) * 1000 / n, 2),
                "client_ms_per_task": round((cpu_seconds(os.getpid()) - cpu_client0) * 1000 / n, 2),
            }
            report = _report(n, t_first, t_submitted, last_finished, progress)
            report["server"] = {"loop": server.loop, "workers": 1, "http_connections": HTTP_CONNECTIONS}
            report["cpu"] = cpu
            return report
        finally:
            await engine.dispose()


# -- baselines ------------------------------------------------------------------------------

_ROW_INPUT = "throughput task 0000"


def sqlite_floor(path: Path, n: int) -> dict[str, Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, tenant_id TEXT, agent_name TEXT, status TEXT, input TEXT,"
            " output TEXT, metadata TEXT, created_at REAL, finished_at REAL)"
        )
        conn.execute("CREATE INDEX ix_status ON tasks (status, created_at)")
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO tasks VALUES (?, 'tnt', 'bench', 'queued', ?, NULL, '{}', ?, NULL)",
                (f"task_{i:026d}", _ROW_INPUT, time.time()),
            )
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "UPDATE tasks SET status='completed', output='\"done\"', finished_at=? WHERE id=?",
                (time.time(), f"task_{i:026d}"),
            )
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    return {"rows": n, "rows_per_s": round(n / elapsed, 1), "elapsed_s": round(elapsed, 3)}


async def postgres_floor(url: str, n: int) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, tenant_id TEXT, agent_name TEXT, status TEXT, input TEXT,"
            " output JSONB, metadata JSONB, created_at DOUBLE PRECISION, finished_at DOUBLE PRECISION)"
        )
        await conn.execute("CREATE INDEX ix_status ON tasks (status, created_at)")
        t0 = time.perf_counter()
        for i in range(n):
            await conn.execute(
                "INSERT INTO tasks VALUES ($1, 'tnt', 'bench', 'queued', $2, NULL, '{}', $3, NULL)",
                f"task_{i:026d}",
                _ROW_INPUT,
                time.time(),
            )
            await conn.execute(
                "UPDATE tasks SET status='completed', output='\"done\"', finished_at=$1 WHERE id=$2",
                time.time(),
                f"task_{i:026d}",
            )
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    return {"rows": n, "rows_per_s": round(n / elapsed, 1), "elapsed_s": round(elapsed, 3)}


# -- main -----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    # Sized so the whole benchmark stays under two minutes at ~40 tasks/s (this VM's worst hour).
    n = 300 if args.quick else 1500
    n_http = 300 if args.quick else 1000
    machine = await machine_info()
    results: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: list[Target] = []
    use_pg = await use_postgres(args)

    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        root = Path(tmp)
        print(f"baseline: raw SQLite insert+update of {n} rows")
        baseline["sqlite"] = sqlite_floor(root / "floor.db", n)
        print(f"  {baseline['sqlite']}")
        for part in ("sqlite", "http"):
            (root / part).mkdir()
        print(f"service layer, SQLite: {n} tasks, worker concurrency {CONCURRENCY}")
        results["service_sqlite"] = await service_layer(
            sqlite_url(root / "sqlite" / "warden.db"), root / "sqlite", n, args.profile
        )
        print(f"  {results['service_sqlite']}")
        print(f"HTTP, SQLite, server in its own process: {n_http} tasks, {HTTP_CONNECTIONS} connections")
        results["http_sqlite"] = await over_http(root / "http", n_http)
        print(f"  {results['http_sqlite']}")
        if use_pg:
            async with pg_database("floor") as url:
                print(f"baseline: raw PostgreSQL insert+update of {n} rows")
                baseline["postgres"] = await postgres_floor(url, n)
                print(f"  {baseline['postgres']}")
            async with pg_database("tput") as url:
                (root / "pg").mkdir()
                print(f"service layer, PostgreSQL: {n} tasks, worker concurrency {CONCURRENCY}")
                results["service_postgres"] = await service_layer(asyncpg_url(url), root / "pg", n, None)
                print(f"  {results['service_postgres']}")

    for key, measured in results.items():
        floor = baseline["postgres" if key.endswith("postgres") else "sqlite"]
        measured["fraction_of_db_floor"] = ratio(measured["tasks_per_s"], floor["rows_per_s"])
        targets.append(
            Target(
                f"1-step tasks/s ({key.replace('_', ', ')})",
                measured["tasks_per_s"],
                TARGET_TPS,
                "tasks/s",
                ">=",
            )
        )

    return write_result(
        NAME,
        machine=machine,
        method=__doc__,
        results=results,
        baseline=baseline,
        targets=targets,
        quick=args.quick,
        began=began,
    )


if __name__ == "__main__":
    run(main, parser(__doc__ or NAME).parse_args())
