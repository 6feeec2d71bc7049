"""The loop's state at a step boundary, and its checkpoints (one row per step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.events.log import Tx
from warden.models.base import Message, Usage
from warden.store.schema import checkpoints, tasks


@dataclass
class LoopState:
    step: int
    """The next model turn to take (0-based)."""
    messages: list[Message]
    usage: dict[str, Usage] = field(default_factory=dict)
    """Per model name."""

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "messages": [m.to_dict() for m in self.messages],
            "usage": self.usage_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        return cls(
            step=int(data["step"]),
            messages=[Message.from_dict(m) for m in data["messages"]],
            usage={k: Usage.from_dict(v) for k, v in (data.get("usage") or {}).items()},
        )


async def latest_checkpoint(conn: AsyncConnection, task_id: str) -> LoopState | None:
    row = (
        await conn.execute(
            select(checkpoints.c.state)
            .where(checkpoints.c.task_id == task_id)
            .order_by(checkpoints.c.step.desc())
            .limit(1)
        )
    ).first()
    return LoopState.from_dict(row.state) if row is not None else None


async def save_checkpoint(tx: Tx, task_id: str, state: LoopState, *, update_usage: bool = True) -> None:
    """``update_usage=False`` when the caller sets the task's usage in a statement it makes anyway."""
    statement = _INSERTS.get(tx.db.dialect)
    if statement is None:
        # Built once per dialect, with bind parameters: building it costs more than running it.
        statement = _INSERTS[tx.db.dialect] = insert(checkpoints).values(
            task_id=bindparam("c_task"),
            step=bindparam("c_step"),
            state=bindparam("c_state", type_=checkpoints.c.state.type),
            created_at=tx.db.now(),
        )
    await tx.write(statement, {"c_task": task_id, "c_step": state.step, "c_state": state.to_dict()})
    if update_usage:
        await tx.write(update(tasks).where(tasks.c.id == task_id).values(usage=state.usage_dict()))


_INSERTS: dict[str, Any] = {}
