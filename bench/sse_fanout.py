"""SSE fan-out: 1,000 concurrent subscribers to one streaming task.

The Warden server (API + 1 worker, SQLite, uvloop, as ``warden serve``) runs in its own process
(`bench._server`); the subscribers run in this process. The target is judged on HTTP/1.1 SSE
clients built on asyncio sockets and httptools' C parser (status, headers and chunked transfer
decoded by the parser, events split and each ``data:`` JSON parsed). The same N subscribers as
httpx streams (one AsyncClient, ``httpx.Limits(max_connections=1100)``) are reported beside it:
httpx parses in Python, and 1,000 of its streams need more than one core of this 2-core machine
for the ~54,000 frames (6 s of client CPU for a 3 s stream), so their figure measures the client
as much as the server. The task's scripted model
first calls a tool that waits for a go-file, so every subscriber can connect and catch up on the
backlog first; then the model streams 100 text deltas 30 ms apart (``chunk_delay``) and answers.

Two server configurations: Warden's default ``events.delta_flush_interval = 0.05`` (the runtime
coalesces the deltas into at most one ``model.delta`` event per 50 ms: ~38 events; the target is
judged on this one) and coalescing off (``= 0``: one event per delta, ~100 events, a harder
stress; not in ``--quick``).

Delivery latency of an event to a subscriber = the subscriber's receipt time (``time.time()``
when the chunk holding the frame is read) - the event's ``ts`` (``time.time()`` in the worker
when the event is written, before its transaction commits). Both clocks are the same machine's.
Only events written after the go signal count (the live part of the stream); every
(subscriber, event) pair is one sample. Also reported: per event, the time until the last
subscriber had it, the CPU time each process used and the server's garbage-collector pauses
over 20 ms during the live window.

Baseline, same server, a fresh task: 1 subscriber.

Context, same server, a third task: the N subscribers as httpx streams (above).

    python -m bench.sse_fanout [--quick] [--subscribers N] [--asyncio]

The clients run on uvloop (``--asyncio`` for the default loop). ``WARDEN_BENCH_SERVER_PROFILE=FILE``
makes the server process write a cProfile; ``WARDEN_BENCH_SERVER_GC_FREEZE=1`` makes it call
``gc.freeze()`` once started (an experiment, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx

from bench._common import (
    AGENT,
    Target,
    bench_config,
    cpu_seconds,
    machine_info,
    ratio,
    run,
    sqlite_url,
    summary,
    write_result,
    write_script,
)
from bench._server import ServerProcess

NAME = "sse_fanout"
TARGET_P99_MS = 100.0
DELTAS = 100
CHUNK_DELAY = 0.03
DEFAULT_FLUSH_INTERVAL = 0.05
"""Warden's default ``events.delta_flush_interval``."""
FRAME_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Subscriber:
    index: int
    received: list[tuple[float, float, int, str]] = field(default_factory=list)
    """(receipt time, event ts, seq, type) per event frame."""
    ready: bool = False
    error: str | None = None


async def subscribe(
    client: httpx.AsyncClient, task_id: str, sub: Subscriber, on_ready: asyncio.Event, ready_count: list[int]
) -> None:
    buffer = b""
    try:
        async with client.stream("GET", f"/v1/tasks/{task_id}/events") as resp:
            if resp.status_code != 200:
                sub.error = f"HTTP {resp.status_code}"
                return
            async for chunk in resp.aiter_raw():
                now = time.time()
                buffer += chunk
                *frames, buffer = FRAME_END.split(buffer)
                for frame in frames:
                    data = _event_data(frame)
                    if data is not None and _record(
                        sub, data["type"], data["ts"], data["seq"], now, on_ready, ready_count
                    ):
                        return
    except (httpx.HTTPError, OSError) as exc:
        sub.error = f"{type(exc).__name__}: {exc}"


def _event_data(frame: bytes) -> dict[str, Any] | None:
    """The JSON of an SSE event's ``data:`` field (None for a comment such as ``: ping``)."""
    for line in frame.split(b"\n"):
        if line.startswith(b"data:"):
            data: dict[str, Any] = json.loads(line[5:])
            return data
    return None


def _record(
    sub: Subscriber, etype: str, ts: float, seq: int, now: float, on_ready: asyncio.Event, count: list[int]
) -> bool:
    """Store one received frame; True once the terminal event arrived."""
    sub.received.append((now, ts, seq, etype))
    if etype == "tool.started" and not sub.ready:
        sub.ready = True
        count[0] += 1
        if count[0] >= count[1]:
            on_ready.set()
    return etype in ("task.completed", "task.failed", "task.cancelled")


class _Response:
    """httptools callbacks: the status, the de-chunked body as it arrives, the end."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.headers_done = False
        self.ended = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.ended = True


async def subscribe_httptools(
    server: ServerProcess, task_id: str, sub: Subscriber, on_ready: asyncio.Event, ready_count: list[int]
) -> None:
    """An HTTP/1.1 SSE client on an asyncio socket with httptools' C parser (the one uvicorn
    serves with): status and chunked transfer decoded by the parser, then the stream split into
    events and each event's ``data:`` JSON parsed. It does what httpx does for a stream at a
    fraction of the CPU, so 1,000 of them do not saturate a core of this 2-core machine."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    except OSError as exc:
        sub.error = f"{type(exc).__name__}: {exc}"
        return
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    try:
        writer.write(
            f"GET /v1/tasks/{task_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        while chunk := await reader.read(65536):
            now = time.time()
            parser.feed_data(chunk)
            if response.headers_done and parser.get_status_code() != 200:
                sub.error = f"HTTP {parser.get_status_code()}"
                return
            body = response.body
            start = 0
            while (end := body.find(b"\n\n", start)) >= 0:
                data = _event_data(bytes(body[start:end]))
                start = end + 2
                if data is not None and _record(
                    sub, data["type"], data["ts"], data["seq"], now, on_ready, ready_count
                ):
                    return
            del body[:start]
            if response.ended:
                break
        sub.error = "the stream ended before the terminal event"
    except (OSError, httptools.HttpParserError, ValueError, KeyError) as exc:
        sub.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()


async def fan_out(
    server: ServerProcess, client: httpx.AsyncClient, go: Path, n: int, *, kind: str
) -> dict[str, Any]:
    """Submit a task, connect ``n`` subscribers, release the task, collect the latencies."""
    resp = await client.post("/v1/tasks", json={"agent": AGENT, "input": f"fan-out to {n}"})
    resp.raise_for_status()
    task_id = resp.json()["id"]
    subs = [Subscriber(i) for i in range(n)]
    ready = asyncio.Event()
    ready_count = [0, n]
    t_connect = time.perf_counter()
    readers = [
        asyncio.create_task(
            subscribe_httptools(server, task_id, s, ready, ready_count)
            if kind == "httptools"
            else subscribe(client, task_id, s, ready, ready_count)
        )
        for s in subs
    ]
    try:
        async with asyncio.timeout(90):
            while not ready.is_set():
                failed = [s for s in subs if s.error]
                if failed:
                    raise RuntimeError(f"{len(failed)} subscribers failed, e.g. {failed[0].error}")
                await asyncio.sleep(0.05)
        connect_s = time.perf_counter() - t_connect
        await asyncio.sleep(0.2)  # let the last subscribers' backlog reads settle
        # The client's own collector must not stall every subscriber at once and be counted
        # as the server's latency (its full collections over 1,000 subscribers' receipts took
        # ~300 ms): collect now, and not again until the live window is over.
        gc.collect()
        gc.disable()
        cpu_server0, cpu_client0 = cpu_seconds(server.pid), cpu_seconds(os.getpid())
        t_go = time.time()
        go.touch()  # noqa: ASYNC240 - creating an empty local file is the signal
        try:
            async with asyncio.timeout(90):
                await asyncio.gather(*readers)
        finally:
            gc.enable()
        t_end = time.time()
        cpu_server = cpu_seconds(server.pid) - cpu_server0
        cpu_client = cpu_seconds(os.getpid()) - cpu_client0
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        go.unlink(missing_ok=True)  # noqa: ASYNC240

    errors = [s.error for s in subs if s.error]
    latencies: list[float] = []
    by_event: dict[int, list[float]] = {}
    types: dict[int, str] = {}
    written: dict[int, float] = {}
    complete = 0
    for s in subs:
        complete += bool(s.received) and s.received[-1][3] == "task.completed"
        for recv, ts, seq, etype in s.received:
            if ts < t_go:
                continue
            latency = (recv - ts) * 1000
            latencies.append(latency)
            by_event.setdefault(seq, []).append(latency)
            written[seq] = ts
            types[seq] = etype
    to_all = [max(v) for v in by_event.values()]
    per_event = [
        {
            "seq": seq,
            "type": types[seq],
            "at_ms": round((written[seq] - t_go) * 1000, 1),
            "p50_ms": summary(v)["p50"],
            "max_ms": summary(v)["max"],
        }
        for seq, v in sorted(by_event.items())
    ]
    live_events = len(written)
    stream_s = t_end - t_go
    return {
        "subscribers": n,
        "window": [t_go, t_end],
        "client": kind,
        "task_id": task_id,
        "subscribers_complete": complete,
        "subscriber_errors": len(errors),
        "connect_all_s": round(connect_s, 3),
        "live_events": live_events,
        "frames_delivered": len(latencies),
        "stream_s": round(stream_s, 3),
        "frames_per_s": round(len(latencies) / stream_s, 1) if stream_s > 0 else None,
        "delivery_ms": summary(latencies),
        "event_to_last_subscriber_ms": summary(to_all),
        "per_event": per_event,
        "cpu_s": {"server_process": round(cpu_server, 2), "client_process": round(cpu_client, 2)},
    }


def _attach_gc_pauses(server: ServerProcess, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Put the server's garbage-collector pauses (> 20 ms) that fell inside each run's live
    window into that run; returns the server's totals per generation."""
    pauses = server.final_stats.get("gc", {}).get("over_20ms", [])
    for run_result in runs:
        start, end = run_result.pop("window")
        run_result["server_gc_pauses_over_20ms"] = [
            {"at_ms": round((t - start) * 1000, 1), "generation": g, "ms": ms}
            for t, g, ms in pauses
            if start <= t <= end
        ]
    by_generation: dict[str, Any] | None = server.final_stats.get("gc", {}).get("by_generation")
    return by_generation


async def serve_and_measure(
    home: Path, n: int, flush_interval: float, plan: list[tuple[str, int, str]]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Start a server whose ``events.delta_flush_interval`` is ``flush_interval`` and run each
    (label, subscribers, client kind) of ``plan`` against it, one after the other."""
    home.mkdir()  # noqa: ASYNC240 - before the server starts
    go = home / "go"
    text = "".join(f"tok{i:02d} " for i in range(DELTAS))  # 6 characters a delta
    script = write_script(
        home / "stream.yaml",
        [
            {"tool_calls": [{"name": "wait_for_file", "arguments": {"path": str(go), "timeout": 100}}]},
            {"text": text, "chunk_size": 6, "chunk_delay": CHUNK_DELAY},
        ],
    )
    config = bench_config(
        home,
        sqlite_url(home / "warden.db"),
        script,
        tools=["wait_for_file"],
        events={"delta_flush_interval": flush_interval},
    )
    measured: dict[str, dict[str, Any]] = {}
    async with ServerProcess(config, workers=1) as server:
        limits = httpx.Limits(max_connections=n + 100, max_keepalive_connections=n + 100)
        timeout = httpx.Timeout(60.0, connect=30.0, pool=60.0)
        headers = {"Authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, limits=limits, timeout=timeout
        ) as client:
            for label, count, kind in plan:
                print(f"{label}: {count} {kind} subscriber(s), delta_flush_interval={flush_interval:g}")
                result = await fan_out(server, client, go, count, kind=kind)
                result["delta_flush_interval_s"] = flush_interval
                measured[label] = result
                print(f"  live events {result['live_events']}, delivery {result['delivery_ms']}")
                print(f"  cpu {result['cpu_s']}")
        server_info = {
            "loop": server.loop,
            "workers": 1,
            "database": "sqlite",
            "gc_tracked_objects_at_start": server.objects_at_start,
        }
    server_info["gc"] = _attach_gc_pauses(server, list(measured.values()))
    server_info["gc_tracked_objects_at_full_collections"] = server.final_stats.get("gc", {}).get(
        "tracked_objects_at_full_collections"
    )
    for label, result in measured.items():
        for pause in result["server_gc_pauses_over_20ms"]:
            print(f"  {label}: server GC pause (generation {pause['generation']}) of {pause['ms']} ms")
    return measured, server_info


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    n = args.subscribers or (200 if args.quick else 1000)
    machine = await machine_info()
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        # Warden's default coalescing (one model.delta event per 50 ms at most): the figure.
        default, server_info = await serve_and_measure(
            Path(tmp) / "default",
            n,
            DEFAULT_FLUSH_INTERVAL,
            [("single", 1, "httptools"), ("fanout", n, "httptools"), ("fanout_httpx", n, "httpx")],
        )
        # Coalescing off (every model delta is its own event, ~100 events): a harder stress.
        uncoalesced: dict[str, dict[str, Any]] = {}
        if not args.quick:
            uncoalesced, _ = await serve_and_measure(
                Path(tmp) / "uncoalesced", n, 0.0, [("single", 1, "httptools"), ("fanout", n, "httptools")]
            )

    single, many = default["single"], default["fanout"]
    many["vs_single_p99_ratio"] = ratio(many["delivery_ms"]["p99"], single["delivery_ms"]["p99"])
    results: dict[str, Any] = {
        "fanout": many,
        "fanout_httpx_client": default["fanout_httpx"],
        "server": server_info,
        "deltas": DELTAS,
        "chunk_delay_s": CHUNK_DELAY,
    }
    baseline: dict[str, Any] = {"single_subscriber": single}
    if uncoalesced:
        results["fanout_uncoalesced"] = uncoalesced["fanout"]
        baseline["single_subscriber_uncoalesced"] = uncoalesced["single"]
    targets = [Target(f"delivery p99, {n} subscribers", many["delivery_ms"].get("p99"), TARGET_P99_MS, "ms")]
    if uncoalesced:
        targets.append(
            Target(
                f"delivery p99, {n} subscribers, coalescing off",
                uncoalesced["fanout"]["delivery_ms"].get("p99"),
                TARGET_P99_MS,
                "ms",
            )
        )
    for label, result in {
        "default": many,
        **({"uncoalesced": uncoalesced["fanout"]} if uncoalesced else {}),
    }.items():
        targets.append(
            Target(
                f"subscribers that got every event ({label})",
                result["subscribers_complete"],
                n,
                "subscribers",
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
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="200 subscribers, default coalescing only")
    p.add_argument("--subscribers", type=int, default=0, help="override the number of subscribers")
    p.add_argument("--asyncio", action="store_true", help="run the clients on asyncio instead of uvloop")
    parsed = p.parse_args()
    run(main, parsed, uvloop=not parsed.asyncio)
