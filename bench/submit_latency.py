"""Submit → first SSE event latency over real HTTP, on SQLite and PostgreSQL.

A `WardenHarness` runs the real server (uvicorn on a loopback port) and one worker in this
process; the agent's scripted model answers at once. One sample: POST /v1/tasks, then
GET /v1/tasks/{id}/events (SSE) and wait for the first complete event frame; the clock runs
from before the POST to the receipt of that frame. The stream is then read to its terminal
event (task.completed, also reported) before the next sample, so samples do not overlap.
Samples are sequential over one keep-alive httpx client; a few warm-up samples are dropped.

Baseline, interleaved with the samples on the same server and client: a bare GET /healthz
round trip (the HTTP stack's floor).

    python -m bench.submit_latency [--quick] [--no-postgres]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    AGENT,
    Target,
    asyncpg_url,
    bench_config,
    machine_info,
    parser,
    pg_database,
    profiled,
    ratio,
    run,
    sqlite_url,
    summary,
    use_postgres,
    write_result,
    write_script,
)
from warden.testing.harness import WardenHarness

NAME = "submit_latency"
TARGET_MS = 15.0
TERMINAL = (b"event: task.completed", b"event: task.failed", b"event: task.cancelled")


async def one_sample(client: httpx.AsyncClient, i: int) -> tuple[float, float, float, float]:
    """(POST ms, submit→first frame ms, submit→terminal frame ms, healthz ms)."""
    t0 = time.perf_counter()
    health = await client.get("/healthz")
    health.raise_for_status()
    t_health = time.perf_counter() - t0

    t0 = time.perf_counter()
    resp = await client.post("/v1/tasks", json={"agent": AGENT, "input": f"latency sample {i}"})
    t_post = time.perf_counter() - t0
    if resp.status_code != 202:
        raise RuntimeError(f"POST /v1/tasks answered {resp.status_code}: {resp.text[:300]}")
    task_id = resp.json()["id"]
    t_first = t_done = None
    buffer = b""
    async with client.stream("GET", f"/v1/tasks/{task_id}/events") as stream:
        if stream.status_code != 200:
            raise RuntimeError(f"GET events answered {stream.status_code}")
        async for chunk in stream.aiter_bytes():
            buffer += chunk.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"data:" not in frame:  # a comment (ping)
                    continue
                now = time.perf_counter()
                if t_first is None:
                    t_first = now - t0
                if any(marker in frame for marker in TERMINAL):
                    t_done = now - t0
                    break
            if t_done is not None:
                break
    if t_first is None or t_done is None:
        raise RuntimeError(f"the event stream of {task_id} ended without a terminal event")
    return t_post * 1000, t_first * 1000, t_done * 1000, t_health * 1000


async def measure(
    database_url: str, home: Path, samples: int, warmup: int, profile: str | None
) -> dict[str, Any]:
    script = write_script(home / "answer.yaml", [{"text": "done"}])
    config = bench_config(home, database_url, script)
    post: list[float] = []
    first: list[float] = []
    done: list[float] = []
    health: list[float] = []
    async with WardenHarness(config, workers=1) as harness, harness.client(timeout=10.0) as client:
        with profiled(profile):
            for i in range(warmup + samples):
                sample = await one_sample(client, i)
                if i >= warmup:
                    post.append(sample[0])
                    first.append(sample[1])
                    done.append(sample[2])
                    health.append(sample[3])
    return {
        "samples": samples,
        "submit_to_first_event_ms": summary(first),
        "post_ms": summary(post),
        "submit_to_completed_ms": summary(done),
        "healthz_ms": summary(health),
    }


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    samples = 50 if args.quick else 200
    warmup = 10
    machine = await machine_info()
    results: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: list[Target] = []
    use_pg = await use_postgres(args)

    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        home = Path(tmp) / "sqlite"
        home.mkdir()
        print(f"SQLite: {samples} samples")
        results["sqlite"] = await measure(sqlite_url(home / "warden.db"), home, samples, warmup, args.profile)
        if use_pg:
            async with pg_database("submit") as url:
                home = Path(tmp) / "pg"
                home.mkdir()
                print(f"PostgreSQL: {samples} samples")
                results["postgres"] = await measure(asyncpg_url(url), home, samples, warmup, None)

    for backend, measured in results.items():
        baseline[backend] = {"healthz_ms": measured.pop("healthz_ms")}
        ours = measured["submit_to_first_event_ms"]
        measured["vs_healthz_p50_ratio"] = ratio(ours["p50"], baseline[backend]["healthz_ms"]["p50"])
        print(f"  {backend}: submit→first event {ours}; healthz {baseline[backend]['healthz_ms']}")
        targets.append(Target(f"submit → first SSE event p50 ({backend})", ours["p50"], TARGET_MS, "ms"))

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
