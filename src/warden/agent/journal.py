"""The journal: model responses and tool results of a task, keyed by where they occur in the
loop (``model:3``, ``tool:3:0``), so a resumed attempt reuses them instead of calling again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.events.log import Tx
from warden.store.database import Database
from warden.store.prepared import Prepared, per_dialect
from warden.store.schema import journal


class EntryStatus(StrEnum):
    STARTED = "started"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    key: str
    status: EntryStatus
    data: Any


class Journal:
    def __init__(self, db: Database, task_id: str) -> None:
        self.db = db
        self.task_id = task_id
        self.entries: dict[str, JournalEntry] = {}

    async def load(self, conn: AsyncConnection) -> None:
        rows = await conn.execute(
            select(journal.c.key, journal.c.status, journal.c.data).where(journal.c.task_id == self.task_id)
        )
        self.entries = {r.key: JournalEntry(r.key, EntryStatus(r.status), r.data) for r in rows}

    def get(self, key: str) -> JournalEntry | None:
        return self.entries.get(key)

    async def start(self, tx: Tx, key: str, data: Any = None) -> None:
        statements = _statements(tx.db)
        statement = statements.restart if key in self.entries else statements.start
        await tx.write(statement, {"j_task": self.task_id, "j_key": key, "j_data": data})
        self.entries[key] = JournalEntry(key, EntryStatus.STARTED, data)

    async def finish(self, tx: Tx, key: str, data: Any) -> None:
        statements = _statements(tx.db)
        statement = statements.refinish if key in self.entries else statements.finish
        await tx.write(statement, {"j_task": self.task_id, "j_key": key, "j_data": data})
        self.entries[key] = JournalEntry(key, EntryStatus.FINISHED, data)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The journal's writes, built once per dialect with bind parameters (building Core
    statements on every call costs more than running them)."""

    start: Prepared
    restart: Prepared
    finish: Prepared
    refinish: Prepared


@per_dialect
def _statements(db: Database) -> _Statements:
    now = db.now()
    this = (journal.c.task_id == bindparam("j_task"), journal.c.key == bindparam("j_key"))
    data = bindparam("j_data", type_=journal.c.data.type)
    row = {"task_id": bindparam("j_task"), "key": bindparam("j_key"), "data": data}
    return _Statements(
        start=Prepared(insert(journal).values(**row, status=EntryStatus.STARTED.value, started_at=now)),
        restart=Prepared(
            update(journal)
            .where(*this)
            .values(status=EntryStatus.STARTED.value, data=data, started_at=now, finished_at=None)
        ),
        finish=Prepared(
            insert(journal).values(**row, status=EntryStatus.FINISHED.value, started_at=now, finished_at=now)
        ),
        refinish=Prepared(
            update(journal).where(*this).values(status=EntryStatus.FINISHED.value, data=data, finished_at=now)
        ),
    )
