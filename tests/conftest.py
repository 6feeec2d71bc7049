"""Shared fixtures: databases (SQLite and a real PostgreSQL), the fake LLM server, and Warden
configurations pointing at them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from warden.config import AgentSpec, ModelConfig, WardenConfig
from warden.models.script import Script, ScriptStep, ScriptToolCall
from warden.testing import FakeLLMServer

PG_ADMIN_URL = os.environ.get("WARDEN_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def _pg_create(name: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


async def _pg_drop(name: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run (dropped at the end)."""
    name = f"warden_test_{uuid.uuid4().hex[:10]}"
    try:
        _run(_pg_create(name))
    except Exception as exc:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI must test PostgreSQL)")
        pytest.skip("SKIPPING POSTGRESQL TESTS — " + message + " (run `make test`, which starts one)")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    _run(_pg_drop(name))


async def _truncate(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            tables = (
                await conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"
                    )
                )
            ).scalars()
            names = ", ".join(f'"{t}"' for t in tables)
            if names:
                await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'warden.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    await _truncate(url)
    yield url


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def script(name: str, *steps: ScriptStep) -> Script:
    return Script(name=name, steps=steps)


def step(text: str = "", *calls: tuple[str, dict[str, Any] | str], **kwargs: Any) -> ScriptStep:
    """``step("thinking", ("calculator", {"expression": "1+1"}))``."""
    return ScriptStep(
        text=text, tool_calls=tuple(ScriptToolCall(name=n, arguments=a) for n, a in calls), **kwargs
    )


MakeConfig = Callable[..., WardenConfig]


@pytest.fixture
def make_config(tmp_path: Path, fake_llm: FakeLLMServer) -> MakeConfig:
    """Build a config whose agents talk to the fake LLM; ``script`` is served as the model."""

    def build(
        *,
        script: Script | None = None,
        tools: list[str] | None = None,
        database_url: str | None = None,
        agent: str = "tester",
        limits: dict[str, Any] | None = None,
        worker: dict[str, Any] | None = None,
        extra_tools: list[dict[str, str]] | None = None,
        **overrides: Any,
    ) -> WardenConfig:
        model_name = script.name if script is not None else "unused"
        if script is not None:
            fake_llm.add_script(script)
        return WardenConfig(
            home=tmp_path / "home",
            database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'warden.db'}",
            models={
                "default": ModelConfig(
                    provider="openai", model=model_name, base_url=fake_llm.url, api_key="test", max_retries=2
                )
            },
            agents=[
                AgentSpec(
                    name=agent,
                    instructions="You are a test agent.",
                    tools=tools if tools is not None else ["calculator", "wait"],
                    **({"limits": limits} if limits else {}),
                )
            ],
            agents_dirs=[],
            worker={
                "lease_ttl": 3,
                "poll_interval": 0.1,
                "reap_interval": 0.5,
                "retry_backoff": 0.1,
                **(worker or {}),
            },
            tools=extra_tools or [],
            **{"sandbox": {"enabled": False}, **overrides},
        )

    return build
