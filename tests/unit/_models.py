"""What the model-provider tests share: the scripts the fake server plays, a request, and a
way to build any provider against the server and collect its stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from warden.config import ModelConfig
from warden.models import Completed, Message, ModelProvider, ModelRequest, StreamItem
from warden.models.factory import build_provider
from warden.testing import FakeLLMServer

DEADLINE = 5.0
USER_ONLY = ModelRequest(messages=(Message(role="user", content="hi"),))


@asynccontextmanager
async def providers(server: FakeLLMServer, wire: str) -> AsyncIterator[Callable[..., ModelProvider]]:
    """A factory of providers speaking ``wire`` to ``server``; closes them all at the end."""
    made: list[ModelProvider] = []

    def build(model: str, **overrides: Any) -> ModelProvider:
        settings: dict[str, Any] = {
            "provider": wire,
            "model": model,
            "base_url": server.url if wire == "openai" else server.anthropic_url,
            "timeout": 5.0,
        }
        provider = build_provider(ModelConfig(**(settings | overrides)))
        made.append(provider)
        return provider

    try:
        yield build
    finally:
        for provider in made:
            await provider.aclose()


async def collect(provider: ModelProvider, request: ModelRequest = USER_ONLY) -> list[StreamItem]:
    async with asyncio.timeout(DEADLINE):
        return [item async for item in provider.stream(request)]


def completed(items: list[StreamItem]) -> Completed:
    last = items[-1]
    assert isinstance(last, Completed)
    return last
