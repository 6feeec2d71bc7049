"""The loop's state at a step boundary, and its checkpoints (one row per step).

A checkpoint row holds what the step *added*: the messages appended since the previous
checkpoint (``base`` says how many came before them), the usage so far and the step number.
The state of step N is the fold of rows 1..N. Storing whole snapshots made a task's checkpoint
bytes, and each step's serialising, grow with the conversation (quadratic in the steps); a row
without ``base`` is such a snapshot (written before increments) and restarts the fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.errors import StorageError
from warden.events.log import Tx
from warden.models.base import Message, Usage
from warden.store.database import Database
from warden.store.prepared import Prepared, per_dialect
from warden.store.schema import checkpoints, tasks


@dataclass
class LoopState:
    step: int
    """The next model turn to take (0-based)."""
    messages: list[Message]
    usage: dict[str, Usage] = field(default_factory=dict)
    """Per model name."""
    saved: int = 0
    """How many of ``messages`` committed checkpoints already hold."""

    @property
    def total_usage(self) -> Usage:
        total = Usage()
        for u in self.usage.values():
            total = total + u
        return total

    def add_usage(self, model: str, usage: Usage) -> None:
        self.usage[model] = self.usage.get(model, Usage()) + usage

    def usage_dict(self) -> dict[str, dict[str, int]]:
        return {name: u.to_dict() for name, u in sorted(self.usage.items())}

    def increment(self) -> dict[str, Any]:
        """The checkpoint row's state: what changed since the last committed checkpoint."""
        return {
            "step": self.step,
            "base": self.saved,
            "messages": [m.to_dict() for m in self.messages[self.saved :]],
            "usage": self.usage_dict(),
        }

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> LoopState | None:
        """Fold a task's checkpoint rows, in step order, into the latest state."""
        state: LoopState | None = None
        for data in rows:
            base = data.get("base")
            added = [Message.from_dict(m) for m in data["messages"]]
            if base is None or state is None:
                if base not in (None, 0):
                    raise StorageError(f"checkpoint of step {data.get('step')} follows a missing one")
                messages = added
            else:
                if base != len(state.messages):
                    raise StorageError(
                        f"checkpoint of step {data.get('step')} starts at message {base}, "
                        f"but the steps before it hold {len(state.messages)}"
                    )
                messages = state.messages
                messages.extend(added)
            state = cls(
                step=int(data["step"]),
                messages=messages,
                usage={k: Usage.from_dict(v) for k, v in (data.get("usage") or {}).items()},
                saved=len(messages),
            )
        return state


async def latest_checkpoint(conn: AsyncConnection, task_id: str) -> LoopState | None:
    rows = await conn.execute(
        select(checkpoints.c.state).where(checkpoints.c.task_id == task_id).order_by(checkpoints.c.step)
    )
    return LoopState.from_rows([r.state for r in rows])


async def save_checkpoint(tx: Tx, task_id: str, state: LoopState, *, update_usage: bool = True) -> None:
    """``update_usage=False`` when the caller sets the task's usage in a statement it makes anyway."""
    await tx.write(_insert(tx.db), {"c_task": task_id, "c_step": state.step, "c_state": state.increment()})
    saved = len(state.messages)

    def committed() -> None:
        # Only a committed row may serve as the next increment's base.
        state.saved = saved

    tx.after_commit(committed)
    if update_usage:
        await tx.write(update(tasks).where(tasks.c.id == task_id).values(usage=state.usage_dict()))


@per_dialect
def _insert(db: Database) -> Prepared:
    return Prepared(
        insert(checkpoints).values(
            task_id=bindparam("c_task"),
            step=bindparam("c_step"),
            state=bindparam("c_state", type_=checkpoints.c.state.type),
            created_at=db.now(),
        )
    )
