"""Checkpoint bytes per step: what durable state costs in storage for an N-step task.

A task's script makes N instant tool-calling model turns, each calling the no-op tool, then
answers (the same workload as ``bench.step_overhead``). After it ends, the benchmark reads
every checkpoint row of the task and measures the bytes the database stores for its ``state``
(SQLite: ``length(CAST(state AS BLOB))``; PostgreSQL: ``pg_column_size(state)``, JSONB after
TOAST compression, and ``octet_length(state::text)``), plus the task's journal and events.

Baseline, measured in the same run: the bytes of what each step adds to the conversation (the
assistant message and the tool result, as JSON). Warden's checkpoint rows hold each step's
increment (the messages it added, the usage, the step), so the ratio to the baseline is the
row's overhead over the bare messages; before increments, whole snapshots made it grow with N.

    python -m bench.checkpoint_bytes [--quick] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench._common import (
    Target,
    asyncpg_url,
    bench_config,
    machine_info,
    parser,
    pg_database,
    run,
    sqlite_url,
    submit,
    summary,
    tool_steps,
    use_postgres,
    wait_task,
    write_result,
    write_script,
)
from warden.agent.state import LoopState
from warden.runtime import Runtime
from warden.store.schema import checkpoints, events, journal
from warden.worker.worker import Worker

NAME = "checkpoint_bytes"
TARGET_BYTES_PER_STEP = 4096.0
"""Mean stored checkpoint bytes per step of a 50-step no-op task (a budget, not a law)."""


async def measure(database_url: str, home: Path, steps: int) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up, before anything is measured
    script = write_script(home / "steps.yaml", tool_steps(steps))
    config = bench_config(home, database_url, script, tools=["noop"], max_steps=steps + 5)
    runtime = await Runtime.open(config)
    try:
        key = await runtime.keys.create("default", name="bench", scopes=["admin"])
        principal = await runtime.keys.authenticate(key.secret)
        worker = Worker(runtime, concurrency=1)
        running = asyncio.create_task(worker.run())
        try:
            task_id = await submit(runtime, principal, "checkpoint bytes")
            status = await wait_task(runtime, task_id, timeout=120)
        finally:
            worker.request_stop()
            async with asyncio.timeout(30):
                await running
        postgres = not runtime.db.is_sqlite
        async with runtime.db.read() as conn:
            if postgres:
                stored = func.pg_column_size(checkpoints.c.state)
                raw = func.octet_length(checkpoints.c.state.cast(_text()))
            else:
                stored = raw = func.length(checkpoints.c.state.cast(_blob()))
            rows = (
                await conn.execute(
                    select(checkpoints.c.step, stored.label("stored"), raw.label("raw"), checkpoints.c.state)
                    .where(checkpoints.c.task_id == task_id)
                    .order_by(checkpoints.c.step)
                )
            ).all()
            journal_bytes = await _column_bytes(conn, journal, journal.c.data, task_id, postgres)
            event_bytes = await _column_bytes(conn, events, events.c.data, task_id, postgres)
        per_step = [float(r.stored) for r in rows]
        raw_per_step = [float(r.raw) for r in rows]
        # The baseline: what each step adds to the conversation (its assistant message and tool
        # result), as compact JSON, cut from the whole conversation at each checkpoint's end.
        state = LoopState.from_rows([r.state for r in rows])
        conversation = [m.to_dict() for m in state.messages] if state is not None else []
        increments: list[float] = []
        previous = 0
        for r in rows:
            end = int(r.state.get("base") or 0) + len(r.state["messages"])
            piece = conversation[previous:end]
            increments.append(float(len(json.dumps(piece, separators=(",", ":")).encode())))
            previous = end
        total = sum(per_step)
        return {
            "status": status,
            "steps": steps,
            "checkpoints": len(rows),
            "checkpoint_bytes_per_step": summary(per_step, unit="bytes", digits=0),
            "checkpoint_text_bytes_per_step": summary(raw_per_step, unit="bytes", digits=0),
            "first_checkpoint_bytes": per_step[0] if per_step else None,
            "last_checkpoint_bytes": per_step[-1] if per_step else None,
            "checkpoint_bytes_total": total,
            "mean_checkpoint_bytes_per_step": round(total / max(len(per_step), 1), 1),
            "journal_bytes_total": journal_bytes,
            "event_bytes_total": event_bytes,
            "increment_bytes_per_step": summary(increments, unit="bytes", digits=0),
            "increment_bytes_total": sum(increments),
            "total_vs_increments": round(total / sum(increments), 2) if increments else None,
        }
    finally:
        await runtime.close()


def _text() -> Any:
    from sqlalchemy import Text

    return Text()


def _blob() -> Any:
    from sqlalchemy import LargeBinary

    return LargeBinary()


async def _column_bytes(conn: Any, table: Any, column: Any, task_id: str, postgres: bool) -> int:
    size = func.pg_column_size(column) if postgres else func.length(column.cast(_blob()))
    value = (
        await conn.execute(select(func.coalesce(func.sum(size), 0)).where(table.c.task_id == task_id))
    ).scalar_one()
    return int(value)


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    steps = 10 if args.quick else 50
    machine = await machine_info()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        home = Path(tmp)
        results["sqlite"] = await measure(sqlite_url(home / "bench.db"), home / "sqlite", steps)
        if await use_postgres(args):
            async with pg_database("ckpt") as url:
                results["postgres"] = await measure(asyncpg_url(url), home / "postgres", steps)
    baseline = {
        backend: {"increment_bytes_per_step": r["increment_bytes_per_step"]} for backend, r in results.items()
    }
    for backend, r in results.items():
        print(
            f"{backend}: {r['steps']} steps, checkpoint bytes/step mean {r['mean_checkpoint_bytes_per_step']:,.0f} "
            f"(first {r['first_checkpoint_bytes']:,.0f}, last {r['last_checkpoint_bytes']:,.0f}); "
            f"increments p50 {r['increment_bytes_per_step']['p50']:,.0f} B/step; "
            f"total ×{r['total_vs_increments']} the increments"
        )
    targets = [
        Target(
            f"mean checkpoint bytes per step, {backend}",
            r["mean_checkpoint_bytes_per_step"],
            TARGET_BYTES_PER_STEP,
            "bytes",
        )
        for backend, r in results.items()
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
    run(main, parser(__doc__ or NAME).parse_args())
