"""The journal: model responses and tool results of a task, keyed by where they occur in the
loop (``model:3``, ``tool:3:0``), so a resumed attempt reuses them instead of calling again."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update

from warden.events.log import Tx
from warden.store.database import Database
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

    async def load(self) -> None:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(journal.c.key, journal.c.status, journal.c.data).where(
                    journal.c.task_id == self.task_id
                )
            )
            self.entries = {r.key: JournalEntry(r.key, EntryStatus(r.status), r.data) for r in rows}

    def get(self, key: str) -> JournalEntry | None:
        return self.entries.get(key)

    async def start(self, tx: Tx, key: str, data: Any = None) -> None:
        if key in self.entries:
            await tx.conn.execute(
                update(journal)
                .where(journal.c.task_id == self.task_id, journal.c.key == key)
                .values(status=EntryStatus.STARTED.value, data=data, started_at=tx.db.now(), finished_at=None)
            )
        else:
            await tx.conn.execute(
                insert(journal).values(
                    task_id=self.task_id,
                    key=key,
                    status=EntryStatus.STARTED.value,
                    data=data,
                    started_at=tx.db.now(),
                )
            )
        self.entries[key] = JournalEntry(key, EntryStatus.STARTED, data)

    async def finish(self, tx: Tx, key: str, data: Any) -> None:
        now = tx.db.now()
        if key in self.entries:
            await tx.conn.execute(
                update(journal)
                .where(journal.c.task_id == self.task_id, journal.c.key == key)
                .values(status=EntryStatus.FINISHED.value, data=data, finished_at=now)
            )
        else:
            await tx.conn.execute(
                insert(journal).values(
                    task_id=self.task_id,
                    key=key,
                    status=EntryStatus.FINISHED.value,
                    data=data,
                    started_at=now,
                    finished_at=now,
                )
            )
        self.entries[key] = JournalEntry(key, EntryStatus.FINISHED, data)
