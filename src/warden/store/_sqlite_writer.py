"""SQLite's one writer connection, owned by a dedicated thread.

aiosqlite hands every driver call (cursor, execute, fetch, close) to its thread and back, so a
statement costs several thread round trips. Here the connection lives in one thread that runs
*units of work*: the async side sends a callable (which receives the sync SQLAlchemy
``Connection``) and awaits one future. A write transaction is a few units at most: statements
whose results nobody reads are deferred and sent with the next unit, and the commit is one more.

Transaction rules (enforced by :class:`WriterTransaction`):

- one transaction at a time holds the connection (an ``asyncio.Lock``); its first unit emits
  ``BEGIN IMMEDIATE``;
- on success the last unit commits; if the commit fails it is rolled back in the same unit;
- on any exception in the body, cancellation included, a rollback unit is queued behind the
  unit in flight (the thread runs units in order) and awaited before the exception propagates,
  so the connection is never left inside a transaction;
- cancelled while the commit is in flight, it waits for the commit's outcome, records it in
  ``committed`` and then re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import CursorResult, IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData

log = logging.getLogger("warden.store")

T = TypeVar("T")

_Job = tuple[Callable[[Connection], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class ConnectionThread:
    """A thread that owns one connection and runs units of work on it, in order."""

    def __init__(self, engine: Engine, *, name: str) -> None:
        self._engine = engine
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._closed = False

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` to run in this thread; its result (or exception) lands in the future."""
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return future

    async def close(self) -> None:
        """Stop the thread once its queued units have run, and close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            fn, loop, future = job
            value: Any = None
            error: BaseException | None = None
            try:
                if self._conn is None:
                    self._conn = self._engine.connect()
                value = fn(self._conn)
            except BaseException as exc:  # delivered to the awaiting coroutine
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_deliver, future, value, error)
        if self._conn is not None:
            try:
                if self._conn.in_transaction():
                    self._conn.rollback()
                self._conn.close()
            except Exception:
                log.exception("closing the SQLite writer connection")
            self._conn = None


class SqliteWriter(ConnectionThread):
    """The thread that owns the writer connection."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, name="warden-sqlite-writer")
        self.lock = asyncio.Lock()
        """Held by the transaction that owns the connection."""

    async def close(self) -> None:
        await super().close()
        self._engine.dispose()


def _deliver(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting coroutine was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def buffered(result: CursorResult[Any]) -> Result[Any]:
    """Fetch everything in the writer thread so the result can be read from the event loop."""
    if result.returns_rows:
        rows = result.freeze()
        rowcount = result.rowcount
        copy = rows()
    else:
        rowcount = result.rowcount
        result.close()
        copy = _empty()
    copy.rowcount = rowcount  # type: ignore[attr-defined]
    return copy


def _empty() -> Result[Any]:
    return IteratorResult(SimpleResultMetaData([]), iter(()))


class WriterTransaction:
    """The connection object a SQLite write transaction's body sees.

    ``execute`` and ``run_sync`` mirror ``AsyncConnection``; ``defer`` queues work whose result
    is not needed (a function of the connection), to be sent with the next unit of work (its
    errors surface there, at the latest at commit, still inside the transaction)."""

    def __init__(self, writer: SqliteWriter) -> None:
        self._writer = writer
        self._pending: list[Callable[[Connection], Any]] = []
        self._begun = False
        self._aborted = False
        self.committed: bool | None = None
        """None until the transaction ends; then whether it committed."""

    def defer(self, fn: Callable[[Connection], Any]) -> None:
        """Queue ``fn`` to run in the writer thread with the transaction's next unit of work:
        its result is dropped and its exception fails that unit."""
        self._pending.append(fn)

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        return await self._unit(lambda conn: buffered(conn.execute(statement, parameters)))

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._unit(lambda conn: fn(conn, *args, **kwargs))

    async def _unit(self, fn: Callable[[Connection], T]) -> T:
        self._check_open()
        return await self._writer.submit(self._job(fn))

    def _job(self, fn: Callable[[Connection], T], *, commit: bool = False) -> Callable[[Connection], T]:
        """``fn`` preceded by BEGIN IMMEDIATE (in the first unit) and the deferred statements;
        with ``commit``, followed by COMMIT, and anything failing rolls the transaction back."""
        pending, self._pending = self._pending, []
        begin = not self._begun
        self._begun = True

        def job(conn: Connection) -> T:
            try:
                if begin:
                    if conn.get_transaction() is not None:  # never build on a stray transaction
                        log.warning("SQLite writer: rolling back a transaction left open")
                        conn.rollback()
                    conn.begin()  # BEGIN IMMEDIATE (the engine's "begin" listener)
                for deferred in pending:
                    deferred(conn)
                value = fn(conn)
                if commit:
                    conn.commit()
                return value
            except BaseException:
                if commit:
                    _rollback(conn)
                elif not _sqlite_in_transaction(conn):
                    # SQLite itself rolled the transaction back (a full disk, an I/O error):
                    # what follows would run outside it, so the transaction can only fail now.
                    self._aborted = True
                    _rollback(conn)
                raise

        return job

    def _check_open(self) -> None:
        if self._aborted:
            raise RuntimeError(
                "SQLite rolled this transaction back after an error; nothing of it was written"
            )
        if self.committed is not None:
            raise RuntimeError("the transaction has ended")

    async def commit(self) -> None:
        if self._aborted:
            self.committed = False
        self._check_open()
        if not self._begun and not self._pending:
            self.committed = True  # nothing was written
            return
        future = self._writer.submit(self._job(_nothing, commit=True))
        try:
            await _settled(future)
        finally:
            self.committed = future.done() and future.exception() is None

    async def rollback(self) -> None:
        self._pending.clear()
        if not self._begun:
            self.committed = False
            return
        future = self._writer.submit(_rollback)
        try:
            await _settled(future)
        finally:
            self.committed = False


def _sqlite_in_transaction(conn: Connection) -> bool:
    try:
        return bool(conn.connection.dbapi_connection.in_transaction)  # type: ignore[union-attr]
    except Exception:
        return True  # cannot tell: let the caller's rollback decide


def _nothing(conn: Connection) -> None:
    return None


def _rollback(conn: Connection) -> None:
    # get_transaction, not in_transaction: a transaction whose COMMIT failed (a full disk) is
    # inactive, so in_transaction() is False, yet it blocks every later begin() until rolled back.
    if conn.get_transaction() is not None:
        conn.rollback()


async def _settled(future: asyncio.Future[Any]) -> Any:
    """Await ``future`` to the end even if cancelled meanwhile; then re-raise the cancellation."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            if not future.done():
                cancelled = exc
                continue
            cancelled = exc
    if cancelled is not None:
        # Let the outcome be known before the cancellation: the exception of a failed unit
        # would otherwise be lost ("Future exception was never retrieved").
        if future.exception() is not None:
            log.warning("SQLite writer unit failed while its caller was cancelled: %s", future.exception())
        raise cancelled
    return future.result()
