"""Gauges read from the database when ``/metrics`` is scraped: queue depth by status, the age
of the oldest queued task and running lease, and sandboxes by template and state. Computed per
scrape (cached for a second), never per task, so they cost nothing between scrapes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select

from warden.store.database import Database
from warden.store.schema import sandboxes, tasks

log = logging.getLogger("warden.telemetry")

QUEUE_STATES = ("queued", "held", "running", "awaiting_approval")
"""``queued``: a worker may take it now; ``held``: queued but waiting (behind its session's
active task, or for a retry's backoff)."""
_LIVE_SANDBOX_STATES = ("starting", "running", "paused", "hibernated")
_CACHE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    depth: dict[str, int]
    oldest_queued_age: float
    """Seconds the longest-waiting available task has waited (0 when none)."""
    oldest_lease_age: float
    """Seconds since the longest-running task first started (0 when none)."""
    lease_overdue: float
    """Seconds the most overdue lease is past its expiry (0 when none: the reaper keeps up)."""
    sandboxes: dict[tuple[str, str], int] = field(default_factory=dict)
    database_up: bool = True


async def read_snapshot(db: Database) -> QueueSnapshot:
    async with db.read() as conn:
        now = float((await conn.execute(select(db.now()))).scalar_one())
        ready = and_(tasks.c.available_at.is_not(None), tasks.c.available_at <= now)
        state = case(
            (and_(tasks.c.status == "queued", ready), "queued"),
            (tasks.c.status == "queued", "held"),
            else_=tasks.c.status,
        ).label("state")
        rows = (
            await conn.execute(
                select(
                    state,
                    func.count().label("n"),
                    func.min(tasks.c.available_at).label("available"),
                    func.min(tasks.c.started_at).label("started"),
                    func.min(tasks.c.lease_until).label("lease_until"),
                )
                .where(tasks.c.status.in_(["queued", "running", "awaiting_approval"]))
                .group_by(state)
            )
        ).all()
        pools = (
            await conn.execute(
                select(sandboxes.c.template, sandboxes.c.state, func.count().label("n"))
                .where(sandboxes.c.state.in_(_LIVE_SANDBOX_STATES))
                .group_by(sandboxes.c.template, sandboxes.c.state)
            )
        ).all()
    depth = dict.fromkeys(QUEUE_STATES, 0)
    oldest_queued = oldest_lease = overdue = 0.0
    for row in rows:
        depth[row.state] = int(row.n)
        if row.state == "queued" and row.available is not None:
            oldest_queued = max(0.0, now - float(row.available))
        if row.state == "running":
            if row.started is not None:
                oldest_lease = max(0.0, now - float(row.started))
            if row.lease_until is not None:
                overdue = max(0.0, now - float(row.lease_until))
    return QueueSnapshot(
        depth=depth,
        oldest_queued_age=oldest_queued,
        oldest_lease_age=oldest_lease,
        lease_overdue=overdue,
        sandboxes={(r.template, r.state): int(r.n) for r in pools},
    )


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: QueueSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        up = GaugeMetricFamily("warden_database_up", "1 when the database answered this scrape's queries.")
        up.add_metric([], 1.0 if snap.database_up else 0.0)
        yield up
        if not snap.database_up:
            return
        depth = GaugeMetricFamily(
            "warden_queue_depth",
            "Unfinished tasks by state: queued (a worker may take it now), held, running, awaiting_approval.",
            labels=["status"],
        )
        for status, count in snap.depth.items():
            depth.add_metric([status], float(count))
        yield depth
        yield GaugeMetricFamily(
            "warden_queue_oldest_age_seconds",
            "Seconds the longest-waiting available queued task has waited.",
            value=snap.oldest_queued_age,
        )
        yield GaugeMetricFamily(
            "warden_lease_oldest_age_seconds",
            "Seconds since the longest-running task first started.",
            value=snap.oldest_lease_age,
        )
        yield GaugeMetricFamily(
            "warden_lease_overdue_seconds",
            "Seconds the most overdue lease is past its expiry (above reap_interval: no reaper runs).",
            value=snap.lease_overdue,
        )
        pools = GaugeMetricFamily(
            "warden_sandboxes", "Live sandboxes by template and state.", labels=["template", "state"]
        )
        for (template, state), count in sorted(snap.sandboxes.items()):
            pools.add_metric([template, state], float(count))
        yield pools


class QueueGauges:
    """Reads the snapshot at most once a second, however many scrapers ask."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cached: tuple[float, QueueSnapshot] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> QueueSnapshot:
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < _CACHE_SECONDS:
                return self._cached[1]
            try:
                async with asyncio.timeout(5.0):
                    snap = await read_snapshot(self.db)
            except Exception as exc:  # a scrape reports the outage rather than failing
                log.warning("metrics: reading the queue from the database failed: %s", exc)
                snap = QueueSnapshot({}, 0.0, 0.0, 0.0, database_up=False)
            self._cached = (time.monotonic(), snap)
            return snap

    async def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(await self.snapshot()))
        return generate_latest(registry)
