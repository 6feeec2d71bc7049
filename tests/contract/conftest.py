"""Fixtures shared by the storage contract tests (each runs on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import MakeConfig
from warden.runtime import Runtime
from warden.service.tasks import Submission


@pytest.fixture
async def runtime(make_config: MakeConfig, database_url: str) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(make_config(database_url=database_url))
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def task_id(runtime: Runtime) -> str:
    """A queued task of tenant ``acme`` (its only event: ``task.queued``, seq 1)."""
    p = await runtime.keys.authenticate(
        (await runtime.keys.create("acme", name="t", scopes=["admin"])).secret
    )
    task, _ = await runtime.tasks.submit(p, Submission(agent="tester", input="hello"))
    return task.id
