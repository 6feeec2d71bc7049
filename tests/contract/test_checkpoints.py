"""The checkpoint contract: each row holds one step's increment; the latest state is their fold,
only committed rows count, and a broken chain is an error, never a silently shorter history."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from warden.agent.state import LoopState, latest_checkpoint, save_checkpoint
from warden.errors import StorageError
from warden.models.base import Message, Usage
from warden.runtime import Runtime
from warden.store.schema import checkpoints


async def _latest(rt: Runtime, task_id: str) -> LoopState | None:
    async with rt.db.read() as conn:
        return await latest_checkpoint(conn, task_id)


def _contents(state: LoopState) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in state.messages]


async def test_steps_store_increments_and_the_fold_is_the_whole_conversation(
    runtime: Runtime, task_id: str
) -> None:
    state = LoopState(step=0, messages=[Message("system", "be brief"), Message("user", "hello")])
    for step in range(1, 4):
        state.messages += [Message("assistant", f"call {step}"), Message("tool", f"result {step}")]
        state.step = step
        state.add_usage("m", Usage(10, 1))
        async with runtime.log.transaction() as tx:
            await save_checkpoint(tx, task_id, state)

    async with runtime.db.read() as conn:
        rows = (await conn.execute(checkpoints.select().where(checkpoints.c.task_id == task_id))).all()
    sizes = {r.step: (r.state["base"], len(r.state["messages"])) for r in rows}
    assert sizes == {1: (0, 4), 2: (4, 2), 3: (6, 2)}

    latest = await _latest(runtime, task_id)
    assert latest is not None
    assert latest.step == 3 and latest.saved == 8
    assert _contents(latest) == _contents(state)
    assert latest.total_usage == Usage(30, 3)


async def test_a_rolled_back_checkpoint_is_not_the_next_ones_base(runtime: Runtime, task_id: str) -> None:
    state = LoopState(step=1, messages=[Message("user", "hello"), Message("assistant", "a")])
    async with runtime.log.transaction() as tx:
        await save_checkpoint(tx, task_id, state)
    state.messages.append(Message("tool", "lost"))
    state.step = 2
    with pytest.raises(RuntimeError):
        async with runtime.log.transaction() as tx:
            await save_checkpoint(tx, task_id, state)
            raise RuntimeError("the step failed")
    assert state.saved == 2
    state.messages.append(Message("assistant", "b"))
    async with runtime.log.transaction() as tx:
        await save_checkpoint(tx, task_id, state)

    latest = await _latest(runtime, task_id)
    assert latest is not None
    assert _contents(latest) == [("user", "hello"), ("assistant", "a"), ("tool", "lost"), ("assistant", "b")]


async def test_a_gap_in_the_chain_is_an_error(runtime: Runtime, task_id: str) -> None:
    state = LoopState(step=1, messages=[Message("user", "hello"), Message("assistant", "a")])
    async with runtime.log.transaction() as tx:
        await save_checkpoint(tx, task_id, state)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            insert(checkpoints).values(
                task_id=task_id,
                step=2,
                state={"step": 2, "base": 5, "messages": [{"role": "tool", "content": "x"}], "usage": {}},
                created_at=0.0,
            )
        )
    with pytest.raises(StorageError, match="starts at message 5"):
        await _latest(runtime, task_id)


async def test_a_whole_snapshot_row_restarts_the_fold(runtime: Runtime, task_id: str) -> None:
    """Rows written before increments hold the whole conversation and no ``base``."""
    async with runtime.db.transaction() as conn:
        for step, contents in ((1, ["hello", "a"]), (2, ["hello", "a", "b"])):
            await conn.execute(
                insert(checkpoints).values(
                    task_id=task_id,
                    step=step,
                    state={"step": step, "messages": [{"role": "user", "content": c} for c in contents]},
                    created_at=0.0,
                )
            )
    state = await _latest(runtime, task_id)
    assert state is not None
    assert [m.content for m in state.messages] == ["hello", "a", "b"]
    state.messages.append(Message("assistant", "c"))
    state.step = 3
    async with runtime.log.transaction() as tx:
        await save_checkpoint(tx, task_id, state)
    again = await _latest(runtime, task_id)
    assert again is not None
    assert [m.content for m in again.messages] == ["hello", "a", "b", "c"]
