"""The script format replayed by the `scripted` provider and by the fake OpenAI-compatible
server in `warden.testing`: one step per model turn, chosen by how many assistant turns the
conversation already holds, so replay is stateless and concurrent conversations do not mix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warden.errors import ConfigError
from warden.governance.untrusted import unmark_tool_output
from warden.models.base import Message


class ScriptError(BaseModel):
    """Make the step fail with an HTTP error before it succeeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = Field(ge=400, le=599)
    message: str = "scripted error"
    times: int = Field(default=1, ge=1)
    """How many identical requests fail before one succeeds."""


class ScriptToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """A dict is sent as JSON; a string is sent verbatim, so it may be malformed on purpose."""
    id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class ScriptStep(BaseModel):
    """One model turn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = ""
    """Assistant text; ``{{last_tool_result}}`` is replaced by the newest tool result."""
    tool_calls: tuple[ScriptToolCall, ...] = ()
    delay: float = Field(default=0.0, ge=0, le=3600)
    """Seconds before the first byte of the response."""
    chunk_delay: float = Field(default=0.0, ge=0, le=60)
    """Seconds between streamed deltas."""
    chunk_size: int = Field(default=6, ge=1)
    """Characters per streamed text delta."""
    error: ScriptError | None = None
    malformed: bool = False
    """Send a response body that is not valid JSON (the client must fail cleanly)."""
    usage: dict[str, int] | None = None
    """Token usage to report; estimated from text length when absent."""


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    steps: tuple[ScriptStep, ...] = Field(min_length=1)
    after_end: str = "The script has no more steps."
    """Text answered once the conversation has more turns than the script has steps."""

    def step_for(self, messages: Sequence[Message]) -> ScriptStep:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn < len(self.steps):
            return self.steps[turn]
        return ScriptStep(text=self.after_end)

    @classmethod
    def load(cls, path: Path) -> Script:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read script {path}: {exc}") from exc
        if isinstance(raw, list):
            raw = {"name": path.stem, "steps": raw}
        if isinstance(raw, dict):
            raw.setdefault("name", path.stem)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"invalid script {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RenderedStep:
    """A step with its templates filled in for one conversation."""

    text: str
    tool_calls: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)
    """(id, name, arguments JSON text) per call."""


def render_step(step: ScriptStep, messages: Sequence[Message], call_id_prefix: str = "call") -> RenderedStep:
    last_tool = unmark_tool_output(next((m.content for m in reversed(messages) if m.role == "tool"), ""))
    text = step.text.replace("{{last_tool_result}}", last_tool)
    turn = sum(1 for m in messages if m.role == "assistant")
    calls = tuple(
        (c.id or f"{call_id_prefix}_{turn}_{i}", c.name, c.arguments_json())
        for i, c in enumerate(step.tool_calls)
    )
    return RenderedStep(text=text, tool_calls=calls)


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token, the usual rule of thumb for English."""
    return max(1, (len(text) + 3) // 4) if text else 0


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
