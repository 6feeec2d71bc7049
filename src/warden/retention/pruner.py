"""The pruner: deletes finished work older than its time-to-live, a bounded batch per
transaction, on SQLite and PostgreSQL alike. Only tasks in a terminal status are touched, so
nothing a queued, running or waiting task needs is ever deleted; the audit log never is."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Table, delete, func, select, tuple_

from warden.retention.config import RetentionConfig
from warden.store.database import Database
from warden.store.schema import checkpoints, events, journal, metadata, snapshots, tasks
from warden.store.tasks import TERMINAL_STATUSES
from warden.telemetry.metrics import PRUNED_ROWS

if TYPE_CHECKING:
    from warden.config import WardenConfig
    from warden.runtime import Runtime

log = logging.getLogger("warden.retention")

OnBatch = Callable[[str, int], None]
"""Called after each batch with the kind pruned and how many went (or would go, dry run)."""

_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)


def _children_of_tasks() -> list[tuple[Table, Column[Any]]]:
    """Every table with a foreign key to ``tasks.id`` (events, checkpoints, journal, approvals,
    and whatever later migrations add), so deleting a task never leaves an orphan row."""
    found = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table is tasks and fk.column.name == "id":
                found.append((table, fk.parent))
    return found


@dataclass
class Pruner:
    db: Database
    config: RetentionConfig
    snapshot_root: Path | None = None
    """Where the sandbox manager keeps snapshot folders; only folders inside it are removed."""
    on_batch: OnBatch | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: WardenConfig, db: Database, on_batch: OnBatch | None = None) -> Pruner:
        return cls(db, config.retention, config.home / "sandbox" / "snapshots", on_batch)

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> Pruner:
        return cls.for_config(runtime.config, runtime.db)

    async def run(self, *, dry_run: bool = False, older_than: float | None = None) -> dict[str, int]:
        """Prune everything past its TTL (or, with ``older_than``, past that many seconds for
        every kind); returns rows deleted (or that would be) per kind."""
        ttl = self.config
        ttls = {
            "tasks": older_than if older_than is not None else ttl.tasks,
            "events": older_than if older_than is not None else ttl.events,
            "checkpoints": older_than if older_than is not None else ttl.checkpoints,
            "snapshots": older_than if older_than is not None else ttl.snapshots,
        }
        self.counts = {}
        async with self.db.read() as conn:
            now = float((await conn.execute(select(self.db.now()))).scalar_one())
        cutoff = {kind: (now - seconds if seconds is not None else None) for kind, seconds in ttls.items()}

        def later(*values: float | None) -> float | None:
            present = [v for v in values if v is not None]
            return max(present) if present else None

        # Parts of finished tasks first (a shorter TTL than the task's own), then whole tasks.
        events_cutoff = later(cutoff["events"], cutoff["tasks"])
        if events_cutoff is not None:
            await self._children(events, events.c.task_id, events_cutoff, dry_run)
        state_cutoff = later(cutoff["checkpoints"], cutoff["tasks"])
        if state_cutoff is not None:
            await self._children(checkpoints, checkpoints.c.task_id, state_cutoff, dry_run)
            await self._children(journal, journal.c.task_id, state_cutoff, dry_run)
        if cutoff["tasks"] is not None:
            await self._tasks(cutoff["tasks"], dry_run)
        if ttls["snapshots"] is not None:
            await self._snapshots(time.time() - ttls["snapshots"], dry_run)
        if not dry_run:
            for kind, count in self.counts.items():
                if count:
                    PRUNED_ROWS.labels(kind).inc(count)
        return dict(self.counts)

    # -- parts -----------------------------------------------------------------------------

    def _expired(self, cutoff: float) -> Any:
        return select(tasks.c.id).where(
            tasks.c.status.in_(_TERMINAL), tasks.c.finished_at.is_not(None), tasks.c.finished_at < cutoff
        )

    def _count(self, kind: str, n: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
        if self.on_batch is not None:
            self.on_batch(kind, n)

    async def _children(self, table: Table, task_col: Column[Any], cutoff: float, dry_run: bool) -> None:
        kind = table.name
        self.counts.setdefault(kind, 0)
        where = task_col.in_(self._expired(cutoff))
        if dry_run:
            async with self.db.read() as conn:
                n = (await conn.execute(select(func.count()).select_from(table).where(where))).scalar_one()
            self._count(kind, int(n))
            return
        key = list(table.primary_key.columns)
        batch = select(*key).where(where).limit(self.config.batch_size)
        target = key[0].in_(batch) if len(key) == 1 else tuple_(*key).in_(batch)
        while True:
            async with self.db.transaction() as conn:
                deleted = (await conn.execute(delete(table).where(target))).rowcount or 0
            self._count(kind, deleted)
            if deleted < self.config.batch_size:
                return
            await asyncio.sleep(0)

    async def _tasks(self, cutoff: float, dry_run: bool) -> None:
        self.counts.setdefault("tasks", 0)
        children = _children_of_tasks()
        if dry_run:
            async with self.db.read() as conn:
                for table, column in children:
                    if table.name in self.counts:
                        continue  # counted above with a cutoff at least as late
                    n = (
                        await conn.execute(
                            select(func.count()).select_from(table).where(column.in_(self._expired(cutoff)))
                        )
                    ).scalar_one()
                    self._count(table.name, int(n))
                n = (
                    await conn.execute(select(func.count()).select_from(self._expired(cutoff).subquery()))
                ).scalar_one()
            self._count("tasks", int(n))
            return
        for table, _ in children:
            self.counts.setdefault(table.name, 0)
        while True:
            async with self.db.transaction() as conn:
                ids = [r.id for r in await conn.execute(self._expired(cutoff).limit(self.config.batch_size))]
                if not ids:
                    return
                # Whatever still hangs from these tasks goes in the same transaction, so there
                # is never a child without its task, whether or not the database cascades.
                for table, column in children:
                    gone = (await conn.execute(delete(table).where(column.in_(ids)))).rowcount or 0
                    if gone:
                        self._count(table.name, gone)
                deleted = (
                    await conn.execute(
                        delete(tasks).where(
                            tasks.c.id.in_(ids),
                            tasks.c.status.in_(_TERMINAL),
                            tasks.c.finished_at < cutoff,
                        )
                    )
                ).rowcount or 0
            self._count("tasks", deleted)
            if len(ids) < self.config.batch_size:
                return
            await asyncio.sleep(0)

    async def _snapshots(self, cutoff: float, dry_run: bool) -> None:
        """Snapshots taken before ``cutoff`` (wall clock: that is what ``created_at`` holds):
        the row first, then its folder, so no reader finds a row whose files are gone."""
        self.counts.setdefault("snapshots", 0)
        old = select(snapshots.c.id).where(snapshots.c.created_at < cutoff)
        if dry_run:
            async with self.db.read() as conn:
                n = (await conn.execute(select(func.count()).select_from(old.subquery()))).scalar_one()
            self._count("snapshots", int(n))
            return
        while True:
            async with self.db.transaction() as conn:
                ids = [r.id for r in await conn.execute(old.limit(self.config.batch_size))]
                if not ids:
                    return
                await conn.execute(delete(snapshots).where(snapshots.c.id.in_(ids)))
            await asyncio.to_thread(self._remove_folders, ids)
            self._count("snapshots", len(ids))
            if len(ids) < self.config.batch_size:
                return

    def _remove_folders(self, ids: list[str]) -> None:
        if self.snapshot_root is None:
            return
        root = self.snapshot_root.resolve()
        for snapshot_id in ids:
            folder = (root / snapshot_id).resolve()
            if folder.parent != root or not folder.is_dir():
                continue  # only the manager's own folders (the files may live on another host)
            try:
                shutil.rmtree(folder)
            except OSError as exc:
                log.warning("retention: could not remove %s: %s", folder, exc)
