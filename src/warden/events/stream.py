"""Follow a task's events from a given seq: first the log's backlog, then live events, with
gaps filled from the log, so a reader sees every event exactly once and in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from warden.events.log import EventLog
from warden.events.types import Event

IsFinished = Callable[[], Awaitable[bool]]
"""Tells whether the task has reached a terminal state (checked when the log runs dry)."""


async def follow(
    log: EventLog,
    task_id: str,
    *,
    after: int = 0,
    is_finished: IsFinished,
    idle_check: float = 5.0,
    page: int = 500,
) -> AsyncIterator[Event]:
    """Yield events with ``seq > after`` until the terminal event has been yielded."""
    last = after
    async with log.bus.subscribe(task_id, after) as sub:

        async def backfill(upto: int | None = None) -> AsyncIterator[Event]:
            nonlocal last
            while True:
                batch = await log.read(task_id, after=last, limit=page)
                for event in batch:
                    if upto is not None and event.seq >= upto:
                        return
                    last = event.seq
                    yield event
                if len(batch) < page:
                    return

        async for event in backfill():
            yield event
            if event.is_terminal:
                return
        if await is_finished():
            # Terminal already and nothing after `after`: one last read closes the race with the
            # terminal event's commit, then the stream ends.
            async for event in backfill():
                yield event
            return
        while True:
            live = await sub.get(timeout=idle_check)
            if live is None or sub.lagged:
                sub.lagged = False
                sub.drain()
                async for missed in backfill():
                    yield missed
                    if missed.is_terminal:
                        return
                if live is None and await is_finished():
                    async for missed in backfill():
                        yield missed
                    return
                continue
            if live.seq <= last:
                if live.is_terminal:  # the task ended before the resume point
                    return
                continue
            if live.seq > last + 1:
                async for missed in backfill(upto=live.seq):
                    yield missed
            if live.seq != last + 1:
                continue
            last = live.seq
            yield live
            if live.is_terminal:
                return
