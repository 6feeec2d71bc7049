"""Test helpers shipped with Warden: fakes that let tests and demos run without external services."""

from warden.testing.fake_llm import FakeLLMServer

__all__ = ["FakeLLMServer"]
