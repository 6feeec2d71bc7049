"""Engines and transactions for SQLite (WAL, one writer connection) and PostgreSQL.

SQLite allows one writer at a time; funnelling every write transaction through a single
connection opened with BEGIN IMMEDIATE turns lock contention into an orderly queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, literal_column, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

from warden.errors import ConfigError, StorageError

log = logging.getLogger("warden.store")


class Database:
    """Owns the engines. `transaction()` for writes, `read()` for reads."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database_url is not a valid URL: {exc}") from exc
        self.url = parsed
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported database {backend!r}: use sqlite+aiosqlite or postgresql+asyncpg")
        self.dialect = backend
        if backend == "sqlite":
            if parsed.drivername != "sqlite+aiosqlite":
                parsed = parsed.set(drivername="sqlite+aiosqlite")
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self._writer = create_async_engine(
                parsed, echo=echo, pool_size=1, max_overflow=0, pool_timeout=60
            )
            self._reader = create_async_engine(parsed, echo=echo, pool_size=8, max_overflow=8)
            _configure_sqlite(self._writer, immediate=True)
            _configure_sqlite(self._reader, immediate=False)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+asyncpg")
            # No pre-ping: it costs a round trip per transaction; a dropped connection surfaces
            # as StorageError once and the pool replaces it.
            self._writer = create_async_engine(
                parsed, echo=echo, pool_size=10, max_overflow=20, pool_recycle=1800
            )
            self._reader = self._writer

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def engine(self) -> AsyncEngine:
        return self._writer

    def now(self) -> ColumnElement[float]:
        """The database's clock in epoch seconds, as a SQL expression."""
        if self.is_sqlite:
            return literal_column("((julianday('now') - 2440587.5) * 86400.0)")
        return func.extract("epoch", func.clock_timestamp())  # type: ignore[return-value]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception."""
        try:
            async with self._writer.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_unavailable(exc):
                raise
            log.warning("database error: %s", _short(exc))
            raise StorageError("the database is unavailable; see the server log") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reader.connect() as conn:
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
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def wall_clock() -> float:
    """Local epoch seconds, for timestamps only this process compares."""
    return time.time()


def _configure_sqlite(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
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


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0][:300]
