"""`Prepared` statements on SQLite run on the driver's cursor: they must behave as
``Connection.execute`` would (same rows, same processing, same exception types)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, create_engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from warden.store.prepared import Prepared
from warden.store.schema import events, metadata, tasks, tenants


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    metadata.create_all(engine)
    with engine.connect() as c:
        c.execute(insert(tenants).values(id="t1", name="acme", created_at=0.0))
        c.execute(
            insert(tasks).values(
                id="task1",
                tenant_id="t1",
                agent_name="a",
                agent_version="1",
                status="running",
                input="hi",
                metadata={},
                usage={},
                max_attempts=3,
                created_at=0.0,
                lease_owner="w1",
            )
        )
        yield c
    engine.dispose()


def test_rows_go_through_the_bind_processors_and_read_back_as_sqlalchemy_wrote_them(conn: Connection) -> None:
    statement = Prepared(insert(events), column_keys=("task_id", "seq", "ts", "type", "data"))
    statement.run_many(
        conn,
        [
            {"task_id": "task1", "seq": i, "ts": 1.5, "type": "tool.output", "data": {"i": i, "é": [1]}}
            for i in (1, 2)
        ],
    )
    rows = conn.execute(select(events.c.seq, events.c.data).order_by(events.c.seq)).all()
    assert [(r.seq, r.data) for r in rows] == [(1, {"i": 1, "é": [1]}), (2, {"i": 2, "é": [1]})]


def test_returning_gives_rows_and_values_the_statement_carries_are_bound(conn: Connection) -> None:
    bump = Prepared(
        update(tasks)
        .where(tasks.c.id == bindparam("task"), tasks.c.lease_owner == "w1")
        .values(last_seq=tasks.c.last_seq + bindparam("n"))
        .returning(tasks.c.last_seq)
    )
    assert bump.run(conn, {"task": "task1", "n": 3}) == [(3,)]
    assert bump.run(conn, {"task": "task1", "n": 2}) == [(5,)]
    assert bump.run(conn, {"task": "nope", "n": 1}) == []
    fenced = Prepared(
        update(tasks)
        .where(tasks.c.id == bindparam("task"), tasks.c.lease_owner == "w2")
        .values(last_seq=0)
        .returning(tasks.c.id)
    )
    assert fenced.run(conn, {"task": "task1"}) == []


def test_a_driver_error_is_wrapped_as_sqlalchemy_wraps_it(conn: Connection) -> None:
    statement = Prepared(insert(tenants).values(id=bindparam("i"), name=bindparam("n"), created_at=0.0))
    statement.run(conn, {"i": "t2", "n": "other"})
    with pytest.raises(IntegrityError, match="UNIQUE"):
        statement.run(conn, {"i": "t3", "n": "other"})


def test_a_missing_parameter_is_named(conn: Connection) -> None:
    statement = Prepared(select(tasks.c.id).where(tasks.c.id == bindparam("task")))
    with pytest.raises(KeyError, match="'task'"):
        statement.run(conn, {})
    assert statement.run(conn, {"task": "task1"}) == [("task1",)]


def test_statements_needing_python_defaults_are_refused(conn: Connection) -> None:
    # tasks.attempt has a Python-side default that only SQLAlchemy's execution fills in.
    statement = Prepared(insert(tasks), column_keys=("id", "tenant_id"))
    with pytest.raises(TypeError, match="Python-side defaults"):
        statement.run(conn, {"id": "x", "tenant_id": "t1"})
