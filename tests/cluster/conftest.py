"""Fixtures of the cluster tests: a throwaway Redis, a fresh PostgreSQL database per test, and
a factory for clusters of real Warden processes that talk to the session's fake LLM."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster._cluster import WardenCluster
from tests.cluster._services import IN_CI, RedisServer
from tests.conftest import PG_ADMIN_URL, _pg_create, _pg_drop
from warden.models.script import Script
from warden.testing import FakeLLMServer


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    try:
        await server.start()
        yield server
    finally:
        server.close()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new database on the test PostgreSQL server, dropped afterwards."""
    name = f"warden_cluster_{uuid.uuid4().hex[:10]}"
    try:
        await _pg_create(name)
    except Exception as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI must run the cluster tests)")
        pytest.skip("SKIPPING CLUSTER TEST — " + message + " (run `make services`)")
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        await _pg_drop(name)


@pytest.fixture
async def cluster_db() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


MakeCluster = Callable[..., WardenCluster]


@pytest.fixture
def make_cluster(tmp_path: Path, fake_llm: FakeLLMServer) -> MakeCluster:
    def make(
        model: Script | str, *, database_url: str, redis_url: str | None, **options: Any
    ) -> WardenCluster:
        """``model``: a script to serve, or the name of a function the test gave the fake LLM."""
        if isinstance(model, Script):
            fake_llm.add_script(model)
        return WardenCluster(
            tmp_path,
            database_url=database_url,
            redis_url=redis_url,
            model_url=fake_llm.url,
            model=model.name if isinstance(model, Script) else model,
            **options,
        )

    return make
