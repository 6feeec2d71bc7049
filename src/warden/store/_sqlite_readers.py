"""SQLite's read connections, each owned by a thread of its own, lent out one read at a time.

Through aiosqlite, one read statement cost five or six thread round trips (pool check-out,
cursor, execute, fetch, close, the reset on check-in), 80-100 µs each on this VM, and a task
makes several reads (its input, journal, approvals, checkpoint, status). Here a statement is
one hand-off: the thread executes it and fetches every row before handing the result back.
Check-in costs none: the read transaction's rollback is queued behind the read's last
statement, and a thread runs its queue in order, so the next borrower's statements come after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Result

from warden.errors import StorageError
from warden.store._sqlite_writer import ConnectionThread, buffered

log = logging.getLogger("warden.store")

T = TypeVar("T")


class ReaderConnection:
    """What a read's body sees: ``execute`` and ``run_sync``, as on ``AsyncConnection``."""

    def __init__(self, thread: ConnectionThread) -> None:
        self._thread = thread

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        return await self._thread.submit(lambda conn: buffered(conn.execute(statement, parameters)))

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._thread.submit(lambda conn: fn(conn, *args, **kwargs))


class SqliteReaders:
    """Up to ``size`` reader threads, started as reads need them."""

    def __init__(self, engine: Engine, size: int, *, wait: float = 30.0) -> None:
        self._engine = engine
        self._size = size
        self._wait = wait
        self._threads: list[ConnectionThread] = []
        self._idle: asyncio.Queue[ConnectionThread] = asyncio.Queue()
        self._closed = False

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReaderConnection]:
        thread = await self._borrow()
        try:
            yield ReaderConnection(thread)
        finally:
            self._give_back(thread)

    async def _borrow(self) -> ConnectionThread:
        if self._closed:
            raise RuntimeError("the SQLite readers are closed")
        if not self._idle.empty():
            return self._idle.get_nowait()
        if len(self._threads) < self._size:
            thread = ConnectionThread(self._engine, name="warden-sqlite-reader")
            self._threads.append(thread)
            return thread
        try:
            async with asyncio.timeout(self._wait):
                return await self._idle.get()
        except TimeoutError:
            raise StorageError(
                f"no read connection came free for {self._wait:.0f} s; see the server log"
            ) from None

    def _give_back(self, thread: ConnectionThread) -> None:
        if self._closed:
            return
        # End the read transaction (releasing its WAL snapshot) behind the read's statements.
        thread.submit(_end_read).add_done_callback(_log_failure)
        self._idle.put_nowait(thread)

    async def close(self) -> None:
        self._closed = True
        for thread in self._threads:
            await thread.close()
        self._engine.dispose()


def _end_read(conn: Connection) -> None:
    if conn.in_transaction():
        conn.rollback()


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("ending a SQLite read failed: %s", future.exception())
