"""Fixtures for the per-protocol model tests: a module sets ``WIRE`` ("openai" or "anthropic")
and gets a fake server that answers ``echo`` and a factory of providers speaking that wire.
`test_model_providers.py` overrides both to run every test on every wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.unit._models import providers
from warden.models import ModelProvider, Script, ScriptStep
from warden.testing import FakeLLMServer


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer([Script(name="echo", steps=(ScriptStep(text="ok"),))]) as srv:
        yield srv


@pytest.fixture
async def make(
    request: pytest.FixtureRequest, server: FakeLLMServer
) -> AsyncIterator[Callable[..., ModelProvider]]:
    async with providers(server, request.module.WIRE) as build:
        yield build
