"""Test doubles for the LLM (speaking the real wire protocols) and a harness that runs a real
Warden inside a test: what Warden's own tests use, importable by users' tests."""

from warden.models.scripted import FunctionProvider, ScriptedProvider
from warden.testing.fake_llm import FakeLLMServer
from warden.testing.harness import WardenHarness, free_port

__all__ = ["FakeLLMServer", "FunctionProvider", "ScriptedProvider", "WardenHarness", "free_port"]
