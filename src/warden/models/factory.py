"""The one place that turns a `ModelConfig` into a provider, and that resolves script references
(built-in names shipped under `warden/models/scripts/`, or paths) into `Script`s."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from warden.config import ModelConfig
from warden.errors import ConfigError
from warden.models.base import ModelProvider
from warden.models.script import Script

SCRIPTS_PACKAGE = "warden.models"
SCRIPTS_FOLDER = "scripts"


def builtin_scripts() -> list[str]:
    """Names of the scripts shipped with Warden."""
    folder = resources.files(SCRIPTS_PACKAGE).joinpath(SCRIPTS_FOLDER)
    if not folder.is_dir():
        return []
    return sorted(
        p.name[: -len(".yaml")] for p in folder.iterdir() if p.is_file() and p.name.endswith(".yaml")
    )


def load_script(ref: str) -> Script:
    """A built-in script by name (``demo``), otherwise a YAML file by path."""
    names = builtin_scripts()
    if ref in names:
        resource = resources.files(SCRIPTS_PACKAGE).joinpath(SCRIPTS_FOLDER).joinpath(f"{ref}.yaml")
        # as_file gives a real path even when Warden is installed as a zip.
        with resources.as_file(resource) as path:
            return Script.load(path)
    path = Path(ref).expanduser()
    if path.is_file():
        return Script.load(path)
    available = ", ".join(names) or "none"
    raise ConfigError(
        f"unknown model script {ref!r}: not a built-in script (built-in: {available}) and no such file"
    )


def build_provider(config: ModelConfig) -> ModelProvider:
    """Create the provider `config.provider` names. SDKs are imported here, on first use, because
    importing them costs about a second at start-up and most processes need only one."""
    if config.provider == "openai":
        from warden.models.openai import OpenAIProvider

        return OpenAIProvider(config)
    if config.provider == "anthropic":
        from warden.models.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    if config.provider == "scripted":
        from warden.models.scripted import ScriptedProvider

        script = load_script(config.script or "demo")
        return ScriptedProvider(script, name=config.model or "scripted")
    raise ConfigError(f"unknown model provider {config.provider!r}")
