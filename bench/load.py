"""Cluster load: 10,000 tasks over 5 minutes through 2 API and 3 worker processes.

Real processes as `warden serve --role api|worker`, configured by environment variables, on a
throwaway PostgreSQL database and Redis (``WARDEN_BENCH_REDIS_URL``, default the local one).
The agent runs the scripted model: one turn that answers after 0.25 s of "thinking" (no
tool), so a worker holds a few leases at any moment. This process submits at a steady rate
(33.3/s; 1,000 over 30 s with --quick), alternating between the API processes over keep-alive
connections, and streams 1 task in 100 over SSE from the other API process (each stream must be
gap-free and end). At 40 % of the run one worker is killed with SIGKILL; its leases expire
(``lease_ttl`` 8 s, reaper every 1 s) and the two other workers re-lease and finish its tasks.

Figures (database clock for task times): throughput = completed tasks ÷ (last ``finished_at`` -
first ``created_at``); queue wait = ``started_at - created_at`` (first lease); end-to-end =
``finished_at - created_at``; errors = rejected submits + failed tasks + broken streams; lost =
accepted tasks not ended 60 s after the last submit; resume time = last ``finished_at`` of the
killed worker's leased tasks - the moment of the kill.

Baseline (same run, same load): the same cluster without Redis (each process polls the database:
idle workers every 0.5 s, streams every 0.5 s).

    python -m bench.load [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from httpx_sse import aconnect_sse

from bench._common import (
    PROJECT_DIR,
    Target,
    free_port,
    machine_info,
    parser,
    pg_database,
    run,
    summary,
    write_result,
)

NAME = "load"
REDIS_URL = os.environ.get("WARDEN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KILL_AT = 0.4
STREAM_EVERY = 100
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}


class Cluster:
    def __init__(self, tmp: Path, database_url: str, redis_url: str | None) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_DIR),
            "WARDEN_CONFIG": str(tmp / "warden.yaml"),
            "WARDEN_DATABASE_URL": database_url.replace("postgresql://", "postgresql+asyncpg://", 1),
            "WARDEN_LOG_LEVEL": "WARNING",
        }
        self.env.pop("WARDEN_REDIS_URL", None)
        if redis_url:
            self.env["WARDEN_REDIS_URL"] = redis_url
        (tmp / "script.yaml").write_text(
            yaml.safe_dump({"name": "load", "steps": [{"text": "Done.", "delay": 0.25}]}), encoding="utf-8"
        )
        (tmp / "warden.yaml").write_text(
            yaml.safe_dump(
                {
                    "models": {"default": {"provider": "scripted", "script": str(tmp / "script.yaml")}},
                    "agents": [{"name": "bench", "instructions": "Answer.", "tools": []}],
                    "agents_dirs": [],
                    "sandbox": {"enabled": False},
                    "worker": {"concurrency": 32, "lease_ttl": 8, "reap_interval": 1.0},
                }
            ),
            encoding="utf-8",
        )
        self.procs: list[asyncio.subprocess.Process] = []
        self.workers: list[asyncio.subprocess.Process] = []
        self.urls: list[str] = []

    async def _spawn(self, name: str, role: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        with (self.tmp / f"{name}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "warden",
                "serve",
                "--role",
                role,
                cwd=self.tmp,
                env={**self.env, "WARDEN_HOME": str(self.tmp / name), **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    async def start(self) -> str:
        key = await self._key()
        for i in range(3):
            self.workers.append(await self._spawn(f"worker{i}", "worker", {}))
        for i in range(2):
            port = free_port()
            await self._spawn(f"api{i}", "api", {"WARDEN_SERVER__PORT": str(port)})
            self.urls.append(f"http://127.0.0.1:{port}")
        async with asyncio.timeout(120), httpx.AsyncClient(timeout=2) as client:
            for url in self.urls:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(url + "/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
        return key

    async def _key(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "warden",
            "keys",
            "create",
            "--name",
            "load",
            "--scope",
            "admin",
            cwd=self.tmp,
            env={**self.env, "WARDEN_HOME": str(self.tmp / "keys"), "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return out.decode().splitlines()[0].strip()

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _stream(url: str, key: str, task_id: str) -> bool:
    """True if the task's SSE stream was gap-free and ended with a terminal event."""
    seqs: list[int] = []
    try:
        async with asyncio.timeout(120), httpx.AsyncClient(base_url=url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {key}"}
            async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events", headers=headers) as source:
                async for sse in source.aiter_sse():
                    if not sse.data:  # keep-alive ping
                        continue
                    event = json.loads(sse.data)
                    seqs.append(event["seq"])
                    if event["type"] in TERMINAL:
                        return seqs == list(range(1, len(seqs) + 1))
    except (httpx.HTTPError, TimeoutError, ValueError):
        return False
    return False


KEEP_LOGS = os.environ.get("WARDEN_BENCH_KEEP_LOGS")
"""A folder: the processes' logs are kept there (one sub-folder per run) instead of deleted."""


async def run_load(database_url: str, redis_url: str | None, total: int, duration: float) -> dict[str, Any]:
    keep = Path(KEEP_LOGS) / ("redis" if redis_url else "polling") if KEEP_LOGS else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="warden-bench-load-") as tmp_name:
        cluster = Cluster(keep or Path(tmp_name), database_url, redis_url)
        try:
            return await _drive(cluster, database_url, redis_url, total, duration)
        finally:
            await cluster.stop()


async def _drive(
    cluster: Cluster, database_url: str, redis_url: str | None, total: int, duration: float
) -> dict[str, Any]:
    key = await cluster.start()
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    clients = [
        httpx.AsyncClient(base_url=u, headers=headers, timeout=30, limits=limits) for u in cluster.urls
    ]
    accepted: list[str] = []
    rejected = 0
    rejections: Counter[str] = Counter()
    """Why submits were rejected: an HTTP status, or the client exception's type (a time-out)."""
    streams: list[asyncio.Task[bool]] = []
    inflight: set[asyncio.Task[None]] = set()
    kill: dict[str, Any] = {}
    conn = await asyncpg.connect(database_url)

    async def submit(i: int) -> None:
        nonlocal rejected
        try:
            response = await clients[i % 2].post("/v1/tasks", json={"agent": "bench", "input": f"task {i}"})
        except httpx.HTTPError as exc:
            rejected += 1
            rejections[type(exc).__name__] += 1
            return
        if response.status_code != 202:
            rejected += 1
            rejections[f"HTTP {response.status_code}"] += 1
            return
        task_id = response.json()["id"]
        accepted.append(task_id)
        if i % STREAM_EVERY == 0:
            streams.append(asyncio.create_task(_stream(cluster.urls[(i + 1) % 2], key, task_id)))

    async def kill_a_worker() -> None:
        victim = cluster.workers[0]
        victim.send_signal(signal.SIGKILL)
        kill["db_time"] = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
        await victim.wait()
        rows = await conn.fetch(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_owner LIKE $1", f"%:{victim.pid}:%"
        )
        kill["orphans"] = [r["id"] for r in rows]

    began = time.monotonic()
    interval = duration / total
    for i in range(total):
        delay = began + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        job = asyncio.create_task(submit(i))
        inflight.add(job)
        job.add_done_callback(inflight.discard)
        if i == int(total * KILL_AT):
            await kill_a_worker()
    submit_seconds = time.monotonic() - began
    if inflight:
        await asyncio.gather(*inflight)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'failed', 'cancelled')"
        )
        if left == 0:
            break
        await asyncio.sleep(0.5)
    stream_ok = await asyncio.gather(*streams)
    rows = await conn.fetch(
        "SELECT id, status, attempt, created_at, started_at, finished_at, error::text AS error FROM tasks"
    )
    for client in clients:
        await client.aclose()
    await conn.close()

    by_id = {r["id"]: r for r in rows}
    done = [r for r in rows if r["status"] == "completed"]
    failed = sum(1 for r in rows if r["status"] in ("failed", "cancelled"))
    failures = Counter(
        str((json.loads(r["error"]) or {}).get("code", "?")) if r["error"] else r["status"]
        for r in rows
        if r["status"] in ("failed", "cancelled")
    )
    lost = sum(1 for t in accepted if t not in by_id or by_id[t]["finished_at"] is None)
    first = min(r["created_at"] for r in rows)
    last = max(r["finished_at"] for r in done)
    orphans = [by_id[t] for t in kill.get("orphans", []) if t in by_id]
    resume = None
    if orphans and all(o["finished_at"] is not None for o in orphans):
        resume = round(max(o["finished_at"] for o in orphans) - kill["db_time"], 2)
    return {
        "redis": redis_url is not None,
        "submitted": total,
        "accepted": len(accepted),
        "completed": len(done),
        "submit_seconds": round(submit_seconds, 1),
        "throughput_per_s": round(len(done) / (last - first), 1),
        "queue_wait_ms": summary([(r["started_at"] - r["created_at"]) * 1000 for r in done]),
        "end_to_end_ms": summary([(r["finished_at"] - r["created_at"]) * 1000 for r in done]),
        "errors": rejected + failed + sum(1 for ok in stream_ok if not ok),
        "errors_detail": {
            "rejected_submits": rejected,
            "failed_tasks": failed,
            "broken_streams": sum(1 for ok in stream_ok if not ok),
            "rejections": dict(rejections),
            "failures": dict(failures),
        },
        "streams_checked": len(stream_ok),
        "lost": lost,
        "killed_worker_tasks": len(orphans),
        "killed_worker_tasks_retried": sum(1 for o in orphans if o["attempt"] >= 2),
        "resume_after_kill_s": resume,
    }


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    total, duration = (1000, 30.0) if args.quick else (10_000, 300.0)
    machine = await machine_info()
    async with pg_database("load") as url:
        print(f"cluster with Redis: {total} tasks over {duration:g} s …", flush=True)
        results = await run_load(url, REDIS_URL, total, duration)
        print(json.dumps(results, indent=2), flush=True)
    async with pg_database("load_base") as url:
        print(f"baseline without Redis: {total} tasks over {duration:g} s …", flush=True)
        baseline = await run_load(url, None, total, duration)
        print(json.dumps(baseline, indent=2), flush=True)
    targets = [
        Target("lost tasks", results["lost"], 0, "tasks"),
        Target("errors", results["errors"], 0, "errors"),
        Target("resume of a killed worker's tasks", results["resume_after_kill_s"], 15, "s"),
    ]
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
    run(main, parser("Cluster load: 2 API + 3 worker processes, a worker killed mid-run.").parse_args())
