"""Provider-neutral chat types and the `ModelProvider` protocol every LLM backend implements.

Messages, tool calls and responses are plain frozen dataclasses that round-trip through JSON,
because the journal stores them and a resumed task must rebuild them exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call requested by the model."""

    id: str
    """The provider's call id; tool results refer back to it."""
    name: str
    arguments: str
    """Arguments exactly as the model produced them: JSON text that may be malformed."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(id=str(data["id"]), name=str(data["name"]), arguments=str(data["arguments"]))


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message in provider-neutral form."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    """Set on assistant messages that call tools."""
    tool_call_id: str | None = None
    """Set on tool messages: the call this is the result of."""
    name: str | None = None
    """Set on tool messages: the tool's name (Anthropic and some OpenAI-compatible servers need it)."""
    is_error: bool = False
    """Set on tool messages whose content reports a failure."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            data["name"] = self.name
        if self.is_error:
            data["is_error"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            name=data.get("name"),
            is_error=bool(data.get("is_error", False)),
        )


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about one tool."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments object."""


WIRE_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What OpenAI's and Anthropic's APIs accept as a tool name."""


def wire_tool_names(names: Iterable[str]) -> dict[str, str]:
    """A provider-safe name for each tool name, one to one: ``time.now`` (an MCP tool) becomes
    ``time__now``; other characters outside the set become ``_``; clashes get a suffix."""
    wire: dict[str, str] = {}
    taken: set[str] = set()
    ordered = sorted(names, key=lambda n: (not WIRE_TOOL_NAME.match(n), n))  # valid names keep theirs
    for name in ordered:
        base = name if WIRE_TOOL_NAME.match(name) else re.sub(r"[^a-zA-Z0-9_-]", "_", name.replace(".", "__"))
        base = base[:64] or "tool"
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base[: 64 - len(str(n)) - 1]}_{n}"
        taken.add(candidate)
        wire[name] = candidate
    return wire


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def to_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(int(data.get("input_tokens", 0)), int(data.get("output_tokens", 0)))


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One chat turn to send to a provider."""

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    """Upper bound on output tokens for this call."""
    temperature: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    """Opaque labels (task id, step) a provider may forward; never sent as content."""


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """A finished model turn."""

    message: Message
    """The assistant message: text and/or tool calls."""
    usage: Usage
    model: str
    """The model name the provider reports it used."""
    finish_reason: str = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message.to_dict(),
            "usage": self.usage.to_dict(),
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    def as_text(self) -> ModelResponse:
        """This response with lone surrogates (a JSON ``\\ud800`` escape in what the model sent)
        replaced by U+FFFD: stored, they would make every API response that shows them fail."""
        message = self.message
        content = valid_text(message.content)
        calls = tuple(
            replace(c, name=valid_text(c.name), arguments=valid_json_text(c.arguments))
            for c in message.tool_calls
        )
        if content is message.content and calls == message.tool_calls:
            return self  # the usual case: nothing was replaced
        return ModelResponse(
            replace(message, content=content, tool_calls=calls), self.usage, self.model, self.finish_reason
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            message=Message.from_dict(data["message"]),
            usage=Usage.from_dict(data.get("usage") or {}),
            model=str(data.get("model", "")),
            finish_reason=str(data.get("finish_reason", "stop")),
        )


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of assistant text as it streams in."""

    text: str


@dataclass(frozen=True, slots=True)
class Completed:
    """The last item of every successful stream."""

    response: ModelResponse


StreamItem = TextDelta | Completed


@runtime_checkable
class ModelProvider(Protocol):
    """An LLM backend. `stream` yields text deltas and ends with exactly one `Completed`.

    Retries of transient failures (429, 5xx, dropped connections) happen inside the provider;
    what escapes is a `warden.errors.ModelError` saying whether a later attempt may succeed.
    Cancelling the consuming task must close the underlying connection promptly.
    """

    name: str
    """The configured model name, e.g. ``gpt-4o-mini``; used for usage accounting."""

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` itself when it is valid Unicode (the usual case, checked in C), else a copy with
    each lone surrogate replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def valid_json_text(text: str) -> str:
    """`valid_text` for JSON text, whose ``\\ud800`` escapes become lone surrogates only once
    parsed: such values are replaced by U+FFFD and the JSON re-serialised. Text that is not
    JSON is only made valid text (whoever parses it reports the error)."""
    text = valid_text(text)
    if "\\u" not in text:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    cleaned = valid_value(value)
    return text if cleaned is value else json.dumps(cleaned, ensure_ascii=False)


def valid_value(value: Any) -> Any:
    """``value`` (parsed JSON) itself if every string in it is valid text, else a cleaned copy."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        items = [valid_value(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        pairs = [(valid_text(k), valid_value(v)) for k, v in value.items()]
        same = all(k is k2 and v is v2 for (k, v), (k2, v2) in zip(pairs, value.items(), strict=True))
        return value if same else dict(pairs)
    return value
