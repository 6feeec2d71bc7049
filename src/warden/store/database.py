"""Engines and transactions for SQLite (WAL, one writer connection) and PostgreSQL.

SQLite allows one writer at a time; funnelling every write transaction through a single
connection opened with BEGIN IMMEDIATE turns lock contention into an orderly queue. That
connection is owned by a dedicated thread (`_sqlite_writer`) that runs a transaction's
statements in a few hand-offs instead of several per statement; reads go to a few reader
threads the same way (`_sqlite_readers`), one hand-off per statement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, create_engine, event, func, literal_column, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from warden.errors import ConfigError, StorageError
from warden.store._sqlite_readers import SqliteReaders
from warden.store._sqlite_writer import SqliteWriter, WriterTransaction
from warden.store.prepared import Prepared

log = logging.getLogger("warden.store")

_SQLITE_READERS = 8
"""Reader threads (and connections) per process on SQLite."""

_WRITER_WAIT = 60.0
"""Seconds a write transaction waits for the writer connection before giving up."""


class Database:
    """Owns the engines. `transaction()` for writes, `read()` for reads."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database_url is not a valid URL: {exc}") from exc
        self.url = parsed
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"unsupported database {backend!r}: use sqlite (sqlite+aiosqlite) or postgresql+asyncpg"
            )
        self.dialect = backend
        self._sqlite_writer: SqliteWriter | None = None
        self._sqlite_readers: SqliteReaders | None = None
        self._engine: AsyncEngine | None = None
        """PostgreSQL's engine (asyncpg); None on SQLite, whose connections the threads own."""
        if backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            plain = parsed.set(drivername="sqlite+pysqlite")
            # Readers: plain sqlite3 connections, one per reader thread.
            read_engine = create_engine(plain, echo=echo, pool_size=_SQLITE_READERS, max_overflow=0)
            _configure_sqlite(read_engine, immediate=False)
            self._sqlite_readers = SqliteReaders(read_engine, _SQLITE_READERS)
            # The writer: one plain sqlite3 connection, used only by the writer thread.
            sync_engine = create_engine(plain, echo=echo)
            _configure_sqlite(sync_engine, immediate=True)
            self._sqlite_writer = SqliteWriter(sync_engine)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+asyncpg")
            # No pre-ping: it costs a round trip per transaction; a dropped connection surfaces
            # as StorageError once and the pool replaces it. No overflow: a process never holds
            # more than ``pool_size`` connections, so N processes stay under PostgreSQL's
            # max_connections (a burst waits for a connection instead of being refused by the
            # server: "too many clients" failed tasks under load).
            self._engine = create_async_engine(
                parsed, echo=echo, pool_size=pool_size, max_overflow=0, pool_recycle=1800
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def now(self) -> ColumnElement[float]:
        """The database's clock in epoch seconds, as a SQL expression."""
        if self.is_sqlite:
            return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
        return func.extract("epoch", func.clock_timestamp())  # type: ignore[return-value]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception."""
        try:
            if self._sqlite_writer is not None:
                async with self._sqlite_transaction(self._sqlite_writer) as tx:
                    yield cast(AsyncConnection, tx)
            else:
                assert self._engine is not None
                async with self._engine.begin() as conn:
                    yield conn
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_unavailable(exc):
                raise
            log.warning("database error: %s", _short(exc))
            if _is_full(exc):
                raise StorageError(
                    "the database's disk is full: nothing was written; see the server log"
                ) from exc
            raise StorageError("the database is unavailable; see the server log") from exc

    @asynccontextmanager
    async def _sqlite_transaction(self, writer: SqliteWriter) -> AsyncIterator[WriterTransaction]:
        try:
            async with asyncio.timeout(_WRITER_WAIT):
                await writer.lock.acquire()
        except TimeoutError:
            raise StorageError(
                f"no write transaction could start for {_WRITER_WAIT:.0f} s: the writer connection is busy"
            ) from None
        try:
            tx = WriterTransaction(writer)
            try:
                yield tx
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        finally:
            writer.lock.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read: one connection (and on SQLite one snapshot) for the block's statements."""
        try:
            if self._sqlite_readers is not None:
                async with self._sqlite_readers.read() as reader:
                    yield cast(AsyncConnection, reader)
                return
            assert self._engine is not None
            async with self._engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_unavailable(exc):
                raise
            log.warning("database error: %s", _short(exc))
            raise StorageError("the database is unavailable; see the server log") from exc

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        if self._sqlite_readers is not None:
            await self._sqlite_readers.close()
        if self._engine is not None:
            await self._engine.dispose()


async def run_later(conn: Any, fn: Callable[[Connection], Any]) -> None:
    """Run ``fn`` (given the synchronous connection) inside a write transaction when its result
    is not needed: on SQLite it is sent to the writer with the transaction's next unit of work
    (its error surfaces there, at the latest at commit, and fails the transaction); elsewhere
    it runs at once."""
    if isinstance(conn, WriterTransaction):
        conn.defer(fn)
    else:
        await conn.run_sync(fn)


async def write(conn: Any, statement: Any, parameters: Any = None) -> None:
    """``run_later`` of one statement (a `Prepared` one runs on the driver's cursor)."""
    if isinstance(statement, Prepared):
        await run_later(conn, lambda sync: statement.run(sync, parameters))
    else:
        await run_later(conn, lambda sync: sync.execute(statement, parameters))


def wall_clock() -> float:
    """Local epoch seconds, for timestamps only this process compares."""
    return time.time()


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _is_unavailable(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return any(
        needle in message
        for needle in (
            "connection",
            "could not connect",
            "terminating",
            "database is locked",
            "disk",
            "no space",
        )
    )


def _is_full(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    return "disk is full" in message or "no space" in message or "disk full" in message


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0][:300]
