"""Hot statements, compiled once and run on the driver's cursor.

An agent step writes about a dozen rows. Run through SQLAlchemy's execution machinery (an
execution context, parameter processing, a result object) each one costs 30-40 µs of Python
around a 5-40 µs SQLite call; on SQLite, where the writer thread runs every statement under the
same GIL as the event loop, that overhead was most of a step's cost (docs/benchmarks.md).

A `Prepared` wraps a Core statement whose parameters are all bind parameters. It is compiled
once per dialect and then runs on a DBAPI cursor of the connection (``sqlite3``'s; on PostgreSQL
SQLAlchemy's asyncpg adapter, which keeps asyncpg's prepared-statement cache): its parameters go
through the bind processors SQLAlchemy itself would apply (JSON, floats), values the statement
carries (a lease owner in a guard) are filled in, and a driver error is wrapped exactly as
SQLAlchemy wraps it (``IntegrityError``, ``OperationalError``; a dropped connection is
invalidated), so callers see no difference. Rows come back as plain tuples of what the driver
returns, without SQLAlchemy's result processing: select numbers and text, not JSON columns
(SQLite returns those as text). Statements run this way bypass ``echo`` and cursor events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class _HasDialect(Protocol):
    @property
    def dialect(self) -> str: ...


D = TypeVar("D", bound=_HasDialect)
T = TypeVar("T")


def per_dialect(build: Callable[[D], T]) -> Callable[[D], T]:
    """Cache what ``build(db)`` returns by ``db.dialect``: a module's statements are built once
    per dialect, with bind parameters (building Core statements costs more than running them)."""
    built: dict[str, T] = {}

    def get(db: D) -> T:
        value = built.get(db.dialect)
        if value is None:
            value = built[db.dialect] = build(db)
        return value

    return get


class Prepared:
    """A Core statement compiled once per dialect; run it with `run` or `run_many` on the
    synchronous connection of a unit of work (a SQLite writer unit or ``run_sync``)."""

    __slots__ = ("_column_keys", "_compiled", "statement")

    def __init__(self, statement: Executable, *, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        """For a bare ``insert(table)``: the columns its rows give."""
        self._compiled: dict[str, _Compiled] = {}

    def run(self, conn: Connection, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Execute once; the rows it returns (``RETURNING``, ``SELECT``), else an empty list."""
        compiled = self._for(conn.dialect)
        args = compiled.arguments(parameters or {})
        return _on_cursor(conn, compiled.sql, args, many=False, rows=compiled.returns_rows)

    def run_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of parameters (one ``executemany``); nothing is returned."""
        if rows:
            compiled = self._for(conn.dialect)
            _on_cursor(conn, compiled.sql, [compiled.arguments(r) for r in rows], many=True, rows=False)

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            # Two threads may compile at once; both results are the same.
            compiled = self._compiled[dialect.name] = _compile(self.statement, dialect, self._column_keys)
        return compiled


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """The bind parameters, in their positions."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    bound: tuple[Any, ...]
    """Each position's value carried by the statement, or `_REQUIRED`."""
    returns_rows: bool

    def arguments(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, process, bound in zip(self.names, self.processors, self.bound, strict=True):
            value = params.get(name, bound)
            if value is _REQUIRED:
                raise KeyError(f"the statement needs a value for bind parameter {name!r}")
            values.append(process(value) if process is not None and value is not None else value)
        return tuple(values)


_REQUIRED = object()


def _compile(statement: Executable, dialect: Dialect, column_keys: list[str] | None) -> _Compiled:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    assert isinstance(compiled, SQLCompiler)
    if not compiled.positional or compiled.positiontup is None:
        raise TypeError(f"{dialect.name} does not use positional parameters")
    if (
        compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.literal_execute_params
        or compiled.post_compile_params
    ):
        # Python-side column defaults, expanding IN lists: only SQLAlchemy's execution does those.
        raise TypeError("a prepared statement cannot have Python-side defaults or expanding parameters")
    names = tuple(compiled.positiontup)
    processors = []
    bound = []
    for name in names:
        bind = compiled.binds[name]
        processors.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
        value = bind.effective_value if bind.callable is not None else bind.value
        bound.append(_REQUIRED if bind.required else value)
    return _Compiled(
        sql=compiled.string,
        names=names,
        processors=tuple(processors),
        bound=tuple(bound),
        returns_rows=bool(statement.is_select or compiled.returning),
    )


def _on_cursor(conn: Connection, sql: str, args: Any, *, many: bool, rows: bool) -> list[tuple[Any, ...]]:
    """Run on a DBAPI cursor of the connection (``sqlite3``'s own; for asyncpg, SQLAlchemy's
    adapter, which awaits the driver inside ``run_sync``), with SQLAlchemy's error handling:
    a driver error is wrapped into SQLAlchemy's exception types, a dropped connection is
    invalidated so the pool replaces it."""
    dialect = conn.dialect
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cursor = dbapi_conn.cursor()
    try:
        if many:
            cursor.executemany(sql, args)
            return []
        cursor.execute(sql, args)
        return [tuple(row) for row in cursor.fetchall()] if rows else []
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, dbapi_conn, cursor)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, args, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from exc
    finally:
        with contextlib.suppress(Exception):  # an invalidated connection's cursor may not close
            cursor.close()
