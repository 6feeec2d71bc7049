"""Runtime overhead per agent step (journal + events + checkpoint), on SQLite and PostgreSQL,
against the same workload in LangGraph with its SQLite and PostgreSQL checkpointers.

A task's script makes K instant tool-calling model turns, each calling a no-op tool, then
answers. One step = one model turn + one tool call + the checkpoint, so the time between two
consecutive ``task.checkpoint`` events (their ``ts``, written inside the step's transactions) is
the runtime's cost of a step: the model and the tool cost nothing. Tasks run one at a time
(worker concurrency 1) so steps are not competing for the database.

LangGraph baseline: a StateGraph (model node returning a scripted AIMessage with a tool call,
ToolNode running the same no-op tool) compiled with AsyncSqliteSaver / AsyncPostgresSaver and
streamed with ``durability="sync"`` (each super-step's checkpoint is written before the next
starts, the guarantee Warden gives); a step is the time between two consecutive ``tools``
updates. The ``durability="async"`` default is reported as context.

    python -m bench.step_overhead [--quick] [--no-postgres] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.graph.message import add_messages

from bench._common import (
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
    submit,
    summary,
    tool_steps,
    use_postgres,
    wait_task,
    write_result,
    write_script,
)
from warden.events.types import EventType
from warden.runtime import Runtime
from warden.worker.worker import Worker

NAME = "step_overhead"
TARGET_MS = {"sqlite": 2.0, "postgres": 5.0}


# -- Warden ---------------------------------------------------------------------------------


async def warden_steps(
    database_url: str, home: Path, k: int, n_tasks: int, profile: str | None
) -> dict[str, Any]:
    script = write_script(home / "steps.yaml", tool_steps(k))
    config = bench_config(
        home, database_url, script, tools=["noop"], max_steps=k + 5, worker={"concurrency": 1}
    )
    runtime = await Runtime.open(config)
    try:
        key = await runtime.keys.create("default", name="bench", scopes=["admin"])
        principal = await runtime.keys.authenticate(key.secret)
        # Tasks run one after another: each is submitted once the previous one has ended, so
        # steps never compete (and the worker's concurrency limit is not relied upon). The
        # first task warms up (imports, statement caches, pools) and is not measured.
        worker = Worker(runtime, concurrency=1)
        ids: list[str] = []
        started = time.perf_counter()
        with profiled(profile):
            running = asyncio.create_task(worker.run())
            try:
                for i in range(n_tasks + 1):
                    task_id = await submit(runtime, principal, f"bench task {i}")
                    ids.append(task_id)
                    await wait_task(runtime, task_id, timeout=60)
            finally:
                worker.request_stop()
                async with asyncio.timeout(30):
                    await running
        wall = time.perf_counter() - started

        steps: list[float] = []
        early: list[float] = []
        late: list[float] = []
        first_step: list[float] = []
        last_turn: list[float] = []
        per_task_wall: list[float] = []
        phases: dict[str, list[float]] = {
            "model_turn": [],
            "tool_start": [],
            "tool_call": [],
            "checkpoint": [],
        }
        statuses: dict[str, int] = {}
        for task_id in ids[1:]:
            events = await runtime.log.read(task_id, 0, limit=100_000)
            by_type: dict[EventType, list[float]] = {}
            for e in events:
                by_type.setdefault(e.type, []).append(e.ts)
            end_type = events[-1].type.value
            statuses[end_type] = statuses.get(end_type, 0) + 1
            cps = by_type.get(EventType.TASK_CHECKPOINT, [])
            if len(cps) != k or EventType.TASK_COMPLETED not in by_type:
                continue
            diffs = [(b - a) * 1000 for a, b in itertools.pairwise(cps)]
            steps += diffs
            early += diffs[:10]
            late += diffs[-10:]
            t_start = by_type[EventType.TASK_STARTED][-1]
            t_done = by_type[EventType.TASK_COMPLETED][-1]
            first_step.append((cps[0] - t_start) * 1000)
            last_turn.append((t_done - cps[-1]) * 1000)
            per_task_wall.append((t_done - t_start) * 1000 / (k + 1))
            # Where a step's time goes: checkpoint(i-1) → model.message(i) → tool.started(i) →
            # tool.finished(i) → checkpoint(i), for steps 2..k.
            msgs = by_type[EventType.MODEL_MESSAGE]
            starts = by_type[EventType.TOOL_STARTED]
            fins = by_type[EventType.TOOL_FINISHED]
            for i in range(1, k):
                phases["model_turn"].append((msgs[i] - cps[i - 1]) * 1000)
                phases["tool_start"].append((starts[i] - msgs[i]) * 1000)
                phases["tool_call"].append((fins[i] - starts[i]) * 1000)
                phases["checkpoint"].append((cps[i] - fins[i]) * 1000)
        return {
            "tasks": n_tasks,
            "steps_per_task": k,
            "task_end_events": statuses,
            "per_step_ms": summary(steps),
            "per_step_first10_ms": summary(early),
            "per_step_last10_ms": summary(late),
            "per_step_wall_ms": summary(per_task_wall),
            "task_start_to_first_checkpoint_ms": summary(first_step),
            "last_checkpoint_to_completed_ms": summary(last_turn),
            "phases_p50_ms": {name: summary(v)["p50"] for name, v in phases.items()},
            "worker_wall_s": round(wall, 3),
        }
    finally:
        await runtime.close()


# -- LangGraph ------------------------------------------------------------------------------


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_langgraph(k: int) -> Any:
    from langchain_core.tools import tool as lc_tool
    from langgraph.graph import START, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @lc_tool
    async def noop() -> str:
        """Does nothing and answers at once."""
        return "ok"

    async def model(state: State) -> dict[str, Any]:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        if turn < k:
            call = {"name": "noop", "args": {}, "id": f"call_{turn}_0", "type": "tool_call"}
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [AIMessage(content="done")]}

    graph = StateGraph(State)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([noop]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)  # to "tools" or END
    graph.add_edge("tools", "model")
    return graph


async def langgraph_steps(saver: Any, k: int, runs: int, durability: str) -> dict[str, Any]:
    graph = build_langgraph(k).compile(checkpointer=saver)
    steps: list[float] = []
    per_run_wall: list[float] = []
    tag = f"{durability}-{time.monotonic_ns()}"
    for r in range(runs + 1):  # the first run warms up and is not measured
        config = {"configurable": {"thread_id": f"{tag}-{r}"}, "recursion_limit": 2 * k + 10}
        stamps: list[float] = []
        inputs = {"messages": [SystemMessage("You are a benchmark agent."), HumanMessage(f"bench task {r}")]}
        t0 = time.perf_counter()
        async with asyncio.timeout(60):
            async for chunk in graph.astream(inputs, config, stream_mode="updates", durability=durability):
                if "tools" in chunk:
                    stamps.append(time.perf_counter())
        t1 = time.perf_counter()
        if len(stamps) != k:
            raise RuntimeError(f"LangGraph run made {len(stamps)} tool steps, expected {k}")
        if r:
            steps += [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
            per_run_wall.append((t1 - t0) * 1000 / (k + 1))
    return {
        "runs": runs,
        "steps_per_run": k,
        "per_step_ms": summary(steps),
        "per_step_wall_ms": summary(per_run_wall),
    }


async def langgraph_sqlite(path: Path, k: int, runs: int) -> dict[str, Any]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(str(path)) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()  # sets journal_mode=WAL
        # Same durability setting as Warden's SQLite connections (WAL + synchronous=NORMAL).
        await conn.execute("PRAGMA synchronous=NORMAL")
        return {
            "sync": await langgraph_steps(saver, k, runs, "sync"),
            "async_default": await langgraph_steps(saver, k, runs, "async"),
        }


async def langgraph_postgres(url: str, k: int, runs: int) -> dict[str, Any]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await saver.setup()
        return {
            "sync": await langgraph_steps(saver, k, runs, "sync"),
            "async_default": await langgraph_steps(saver, k, runs, "async"),
        }


# -- main -----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    k = 20 if args.quick else 50
    n_tasks = 4 if args.quick else 20
    machine = await machine_info()
    results: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: list[Target] = []
    use_pg = await use_postgres(args)

    with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
        root = Path(tmp)
        print(f"Warden on SQLite: {n_tasks} tasks × {k} steps")
        home = root / "sqlite"
        home.mkdir()
        results["sqlite"] = await warden_steps(sqlite_url(home / "warden.db"), home, k, n_tasks, args.profile)
        print(f"  per step {results['sqlite']['per_step_ms']}")
        print("LangGraph on SQLite (AsyncSqliteSaver)")
        baseline["sqlite"] = await langgraph_sqlite(root / "langgraph.db", k, n_tasks)
        print(f"  per step {baseline['sqlite']['sync']['per_step_ms']}")
        if use_pg:
            async with pg_database("steps") as url:
                print(f"Warden on PostgreSQL: {n_tasks} tasks × {k} steps")
                home = root / "pg"
                home.mkdir()
                results["postgres"] = await warden_steps(asyncpg_url(url), home, k, n_tasks, None)
                print(f"  per step {results['postgres']['per_step_ms']}")
            async with pg_database("steps_lg") as url:
                print("LangGraph on PostgreSQL (AsyncPostgresSaver)")
                baseline["postgres"] = await langgraph_postgres(url, k, n_tasks)
                print(f"  per step {baseline['postgres']['sync']['per_step_ms']}")

    for backend, limit in TARGET_MS.items():
        if backend not in results:
            continue
        ours = results[backend]["per_step_ms"]
        theirs = baseline[backend]["sync"]["per_step_ms"]
        results[backend]["vs_langgraph"] = {
            "p50_ratio": ratio(ours["p50"], theirs["p50"]),
            "p99_ratio": ratio(ours["p99"], theirs["p99"]),
            "note": "Warden ÷ LangGraph (durability=sync); below 1 means Warden is faster",
        }
        targets.append(Target(f"per-step p50 ({backend})", ours["p50"], limit, "ms"))

    method = (__doc__ or "").strip()
    return write_result(
        NAME,
        machine=machine,
        method=method,
        results=results,
        baseline=baseline,
        targets=targets,
        quick=args.quick,
        began=began,
    )


if __name__ == "__main__":
    run(main, parser(__doc__ or NAME).parse_args())
