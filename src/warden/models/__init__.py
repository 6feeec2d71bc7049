"""Model access: provider-neutral chat types, the `ModelProvider` protocol, its backends and the
factory that picks one from configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warden.models.base import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    Role,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from warden.models.factory import build_provider, builtin_scripts, load_script
from warden.models.script import RenderedStep, Script, ScriptError, ScriptStep, ScriptToolCall
from warden.models.scripted import FunctionProvider, ScriptedProvider

if TYPE_CHECKING:
    from warden.models.anthropic import AnthropicProvider
    from warden.models.openai import OpenAIProvider

__all__ = [
    "AnthropicProvider",
    "Completed",
    "FunctionProvider",
    "Message",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "OpenAIProvider",
    "RenderedStep",
    "Role",
    "Script",
    "ScriptError",
    "ScriptStep",
    "ScriptToolCall",
    "ScriptedProvider",
    "StreamItem",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "build_provider",
    "builtin_scripts",
    "load_script",
]

_LAZY = {
    "OpenAIProvider": "warden.models.openai",
    "AnthropicProvider": "warden.models.anthropic",
}


def __getattr__(name: str) -> Any:
    # The SDK-backed providers load on first access: importing both SDKs costs over a second.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
