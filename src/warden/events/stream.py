"""Follow a task's events from a given seq: first the log's backlog, then live events, with
gaps filled from the log, so a reader sees every event exactly once and in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from warden.events.log import EventLog
from warden.events.types import Event

IsFinished = Callable[[], Awaitable[bool]]
"""Tells whether the task has reached a terminal state (checked when the log runs dry)."""


async def flatten(batches: AsyncIterator[list[Event]]) -> AsyncIterator[Event]:
    """The events of `follow_batches`, one at a time."""
    async for batch in batches:
        for event in batch:
            yield event


async def follow_batches(
    log: EventLog,
    task_id: str,
    *,
    after: int = 0,
    is_finished: IsFinished,
    idle_check: float = 5.0,
    page: int = 500,
) -> AsyncIterator[list[Event]]:
    """Yield events with ``seq > after`` until the terminal event has been yielded, in batches
    of what is ready at once (a page of the backlog, or the live events that queued up while the
    reader was busy): a reader that falls behind catches up in fewer, larger writes instead of
    one per event. The last batch ends with the terminal event; `flatten` gives single events."""
    last = after
    async with log.bus.subscribe(task_id, after) as sub:

        async def backfill(upto: int | None = None) -> AsyncIterator[list[Event]]:
            """Pages of the log after ``last`` (and before ``upto``), ending at a terminal event."""
            nonlocal last
            while True:
                rows = await log.read(task_id, after=last, limit=page)
                batch: list[Event] = []
                for event in rows:
                    if upto is not None and event.seq >= upto:
                        break
                    last = event.seq
                    batch.append(event)
                    if event.is_terminal:
                        break
                if batch:
                    yield batch
                if len(batch) < page:
                    return

        async for batch in backfill():
            yield batch
            if batch[-1].is_terminal:
                return
        if await is_finished():
            # Terminal already and nothing after `after`: one last read closes the race with the
            # terminal event's commit, then the stream ends.
            async for batch in backfill():
                yield batch
            return
        while True:
            live = await sub.get(timeout=idle_check)
            if live is None or sub.lagged:
                sub.lagged = False
                sub.drain()
                async for batch in backfill():
                    yield batch
                    if batch[-1].is_terminal:
                        return
                if live is None and await is_finished():
                    async for batch in backfill():
                        yield batch
                    return
                continue
            out: list[Event] = []
            for event in [live, *sub.drain()]:
                if event.seq <= last:
                    if event.is_terminal:  # the task ended before the resume point
                        if out:
                            yield out
                        return
                    continue
                if event.seq > last + 1:
                    async for missed in backfill(upto=event.seq):
                        out += missed
                if event.seq != last + 1:
                    continue
                last = event.seq
                out.append(event)
                if event.is_terminal:
                    yield out
                    return
            if out:
                yield out
