"""The fixtures the official MCP conformance suite calls by name (``test_*`` tools, ``test://``
resources, prompts, logging, subscriptions, completion). Mounted only by the conformance entry
point, beside Warden's real tools, so the suite checks the very server Warden runs."""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_EMPTY = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
NAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
}
SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class MemoryEventStore(EventStore):
    """SSE resumability for the reconnection scenario: the last events in memory, bounded."""

    def __init__(self, keep: int = 10_000) -> None:
        self._events: deque[tuple[str, int, JSONRPCMessage | None]] = deque(maxlen=keep)
        self._next = 0

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        self._next += 1
        self._events.append((stream_id, self._next, message))
        return str(self._next)

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        stream = next((s for s, n, _ in self._events if n == after), None)
        if stream is None:
            return None
        for s, n, message in list(self._events):
            if s == stream and n > after and message is not None:
                await send_callback(EventMessage(message, str(n)))
        return stream


def _elicit_name(message: str = "What is your name?") -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=NAME_SCHEMA))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
            max_tokens=max_tokens,
        )
    )


class UserResponse(BaseModel):
    response: str = Field(description="User's response")


class DefaultsForm(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


class EnumForm(BaseModel):
    """SEP-1330: every enum shape."""

    untitledSingle: str = Field(
        description="Simple enum without titles",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    titledSingle: str = Field(
        description="Enum with titled options (oneOf)",
        json_schema_extra={
            "oneOf": [
                {"const": "low", "title": "Low Priority"},
                {"const": "medium", "title": "Medium Priority"},
                {"const": "high", "title": "High Priority"},
            ]
        },
    )
    untitledMulti: list[str] = Field(
        description="Multi-select without titles",
        json_schema_extra={"items": {"type": "string", "enum": ["read", "write", "execute"]}},
    )
    titledMulti: list[str] = Field(
        description="Multi-select with titled options",
        json_schema_extra={
            "items": {
                "anyOf": [
                    {"const": "feature", "title": "New Feature"},
                    {"const": "bug", "title": "Bug Fix"},
                    {"const": "docs", "title": "Documentation"},
                ]
            }
        },
    )
    legacyEnum: str = Field(
        description="Legacy enum with enumNames",
        json_schema_extra={
            "enum": ["small", "medium", "large"],
            "enumNames": ["Small Size", "Medium Size", "Large Size"],
        },
    )


# -- tools -----------------------------------------------------------------------------------


def test_simple_text() -> str:
    """Tests simple text content response"""
    return "This is a simple text response for testing."


def test_image_content() -> list[ImageContent]:
    """Tests image content response"""
    return [ImageContent(type="image", data=PNG_1PX, mime_type="image/png")]


def test_audio_content() -> list[AudioContent]:
    """Tests audio content response"""
    return [AudioContent(type="audio", data=WAV_EMPTY, mime_type="audio/wav")]


def test_embedded_resource() -> list[EmbeddedResource]:
    """Tests embedded resource content response"""
    return [
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://embedded-resource",
                mime_type="text/plain",
                text="This is an embedded resource content.",
            ),
        )
    ]


def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Tests response with multiple content types (text, image, resource)"""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_1PX, mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text='{"test": "data", "value": 123}',
            ),
        ),
    ]


@contextmanager
def _deprecated_on_purpose() -> Iterator[None]:
    """The suite still checks logging and sampling, deprecated as of 2026-07-28 (SEP-2577)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


async def _log(ctx: Context, text: str) -> None:
    with _deprecated_on_purpose():
        await ctx.info(text)


async def test_tool_with_logging(ctx: Context) -> str:
    """Tests tool that emits log messages during execution"""
    for line in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await _log(ctx, line)
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


async def test_tool_with_progress(ctx: Context) -> str:
    """Tests tool that reports progress notifications"""
    for step in (0, 50, 100):
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        await asyncio.sleep(0.05)
    meta = ctx.request_context.meta
    return str(meta.get("progress_token") if meta else 0)


async def test_sampling(prompt: str, ctx: Context) -> str:
    """Tests server-initiated sampling (LLM completion request)"""
    try:
        with _deprecated_on_purpose():
            result = await ctx.session.create_message(
                messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
                max_tokens=100,
                related_request_id=ctx.request_id,
            )
    except Exception as exc:
        return f"Sampling not supported or error: {exc}"
    text = result.content.text if result.content.type == "text" else "No response"
    return f"LLM response: {text}"


async def _elicit_form(ctx: Context, message: str, schema: type[BaseModel], label: str) -> str:
    try:
        result = await ctx.elicit(message=message, schema=schema)
    except Exception as exc:
        return f"Elicitation not supported or error: {exc}"
    content = result.data.model_dump_json() if result.action == "accept" else "{}"
    return f"{label}: action={result.action}, content={content}"


async def test_elicitation(message: str, ctx: Context) -> str:
    """Tests server-initiated elicitation (user input request)"""
    return await _elicit_form(ctx, message, UserResponse, "User response")


async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Tests elicitation with default values for all primitive types (SEP-1034)"""
    return await _elicit_form(ctx, "Please provide user information", DefaultsForm, "Elicitation result")


async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Tests elicitation with enum schema variations per SEP-1330"""
    return await _elicit_form(
        ctx, "Please select values using different enum schema types", EnumForm, "Elicitation completed"
    )


def test_error_handling() -> str:
    """Tests error response handling"""
    raise RuntimeError("This tool intentionally returns an error for testing")


def test_x_mcp_header(
    region: Annotated[
        str,
        Field(
            description="Mirrored into the Mcp-Param-Region header",
            json_schema_extra={"x-mcp-header": "Region"},
        ),
    ] = "<none>",  # noqa: PT028 - a fixture named for the suite, not a pytest test
) -> str:
    """Tests SEP-2243 Mcp-Param-* server-side validation."""
    return f"region={region}"


async def test_missing_capability(ctx: Context) -> str:
    """Answers with a protocol error naming the client capability it needs (sampling)."""
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="This tool requires the client 'sampling' capability",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "Client declared sampling capability; proceeding."


async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single elicitation request"""
    answer = (ctx.input_responses or {}).get("user_name")
    if answer is not None:
        name = (
            answer.content.get("name", "stranger")
            if isinstance(answer, ElicitResult) and answer.content
            else "?"
        )
        return f"Hello, {name}!"
    return InputRequiredResult(input_requests={"user_name": _elicit_name()})


async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single sampling request"""
    answer = (ctx.input_responses or {}).get("capital_question")
    if answer is not None:
        ok = isinstance(answer, CreateMessageResult) and answer.content.type == "text"
        return f"Model said: {answer.content.text if ok else '?'}"  # type: ignore[union-attr]
    return InputRequiredResult(
        input_requests={"capital_question": _sample("What is the capital of France?", 100)}
    )


async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult with a single roots/list request"""
    answer = (ctx.input_responses or {}).get("client_roots")
    if answer is not None:
        return f"Client exposed {len(answer.roots) if isinstance(answer, ListRootsResult) else 0} root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Tests requestState round-tripping in the InputRequiredResult flow"""
    if "confirm" in (ctx.input_responses or {}) and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    confirm = ElicitRequest(
        params=ElicitRequestFormParams(message="Please confirm", requested_schema=CONFIRM_SCHEMA)
    )
    return InputRequiredResult(input_requests={"confirm": confirm}, request_state="request-state-nonce")


async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Tests InputRequiredResult carrying elicitation, sampling and roots requests together"""
    if {"user_name", "greeting", "client_roots"} <= (ctx.input_responses or {}).keys():
        return "All inputs received."
    return InputRequiredResult(
        input_requests={
            "user_name": _elicit_name(),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="multiple-inputs",
    )


async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Tests a three-round InputRequiredResult flow with evolving requestState"""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    responses = ctx.input_responses or {}
    first = InputRequiredResult(
        input_requests={"step1": _elicit_name("Step 1: What is your name?")},
        request_state=json.dumps({"round": 1}),
    )
    if state.get("round") == 1 and "step1" in responses:
        step1 = responses["step1"]
        name = step1.content.get("name") if isinstance(step1, ElicitResult) and step1.content else None
        color = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
        ask = ElicitRequest(
            params=ElicitRequestFormParams(
                message="Step 2: What is your favorite color?", requested_schema=color
            )
        )
        return InputRequiredResult(
            input_requests={"step2": ask}, request_state=json.dumps({"round": 2, "name": name})
        )
    if state.get("round") == 2 and "step2" in responses:
        step2 = responses["step2"]
        chosen = step2.content.get("color") if isinstance(step2, ElicitResult) and step2.content else None
        return f"{state.get('name')} likes {chosen}."
    return first


async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """The SDK's request-state boundary rejects a tampered echo before this runs."""
    if ctx.request_state is None:
        confirm = ElicitRequest(
            params=ElicitRequestFormParams(message="Please confirm", requested_schema=CONFIRM_SCHEMA)
        )
        return InputRequiredResult(input_requests={"confirm": confirm}, request_state="round-1")
    return f"state-ok: {ctx.request_state}"


async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Tests that inputRequests only include methods the client declared support for"""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        requests["sample"] = _sample("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        requests["ask"] = _elicit_name()
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


def json_schema_2020_12_tool() -> str:
    """Tests JSON Schema 2020-12 keyword preservation in tools/list."""
    return "json_schema_2020_12_tool"


async def test_reconnection(ctx: Context) -> str:
    """Tests SSE polling by closing stream mid-call (SEP-1699)"""
    await _log(ctx, "Before disconnect")
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)
    await _log(ctx, "After reconnect")
    return "Reconnection test completed"


def _dynamic() -> str:
    """Registered and removed again by the list-changed fixtures."""
    return "dynamic"


async def test_trigger_tool_change(ctx: Context) -> str:
    """Mutates the tool list and announces it to subscriptions/listen streams (SEP-2575)"""
    ctx.mcp_server.add_tool(_dynamic, name="test_dynamic_tool")
    ctx.mcp_server.remove_tool("test_dynamic_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


async def test_trigger_prompt_change(ctx: Context) -> str:
    """Mutates the prompt list and announces it to subscriptions/listen streams (SEP-2575)"""
    ctx.mcp_server.add_prompt(
        Prompt.from_function(_dynamic, name="test_dynamic_prompt", description="dynamic")
    )
    ctx.mcp_server.remove_prompt("test_dynamic_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


TOOLS = (
    test_simple_text,
    test_image_content,
    test_audio_content,
    test_embedded_resource,
    test_multiple_content_types,
    test_tool_with_logging,
    test_tool_with_progress,
    test_sampling,
    test_elicitation,
    test_elicitation_sep1034_defaults,
    test_elicitation_sep1330_enums,
    test_error_handling,
    test_x_mcp_header,
    test_missing_capability,
    test_input_required_result_elicitation,
    test_input_required_result_sampling,
    test_input_required_result_list_roots,
    test_input_required_result_request_state,
    test_input_required_result_multiple_inputs,
    test_input_required_result_multi_round,
    test_input_required_result_tampered_state,
    test_input_required_result_capabilities,
    test_reconnection,
    test_trigger_tool_change,
    test_trigger_prompt_change,
)

# -- prompts ---------------------------------------------------------------------------------


def test_simple_prompt() -> list[UserMessage]:
    """A simple prompt without arguments"""
    return [
        UserMessage(
            role="user", content=TextContent(type="text", text="This is a simple prompt for testing.")
        )
    ]


def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with required arguments"""
    text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
    return [UserMessage(role="user", content=TextContent(type="text", text=text))]


def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt that includes an embedded resource"""
    resource = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(role="user", content=EmbeddedResource(type="resource", resource=resource)),
        UserMessage(
            role="user", content=TextContent(type="text", text="Please process the embedded resource above.")
        ),
    ]


def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that includes image content"""
    return [
        UserMessage(role="user", content=ImageContent(type="image", data=PNG_1PX, mime_type="image/png")),
        UserMessage(role="user", content=TextContent(type="text", text="Please analyze the image above.")),
    ]


async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """Tests InputRequiredResult from prompts/get (SEP-2322 non-tool request)"""
    answer = (ctx.input_responses or {}).get("user_context")
    if answer is not None:
        text = (
            answer.content.get("context", "?") if isinstance(answer, ElicitResult) and answer.content else "?"
        )
        return [
            UserMessage(
                role="user", content=TextContent(type="text", text=f"Use the following context: {text}")
            )
        ]
    schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
    ask = ElicitRequest(
        params=ElicitRequestFormParams(message="What context should the prompt use?", requested_schema=schema)
    )
    return InputRequiredResult(input_requests={"user_context": ask})


PROMPTS = (
    test_simple_prompt,
    test_prompt_with_arguments,
    test_prompt_with_embedded_resource,
    test_prompt_with_image,
    test_input_required_result_prompt,
)

# -- low-level handlers ----------------------------------------------------------------------


async def _set_level(_ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    return EmptyResult()


async def _subscribe(_ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    return EmptyResult()


async def _unsubscribe(_ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    return EmptyResult()


async def _complete(
    ref: PromptReference | ResourceTemplateReference,
    argument: CompletionArgument,
    context: CompletionContext | None,
) -> Completion:
    return Completion(values=[], total=0, has_more=False)


def install_fixtures(server: MCPServer) -> None:
    """Add every fixture to ``server``."""
    for tool in TOOLS:
        server.add_tool(tool)
    server.add_tool(json_schema_2020_12_tool)
    # MCPServer has no public way to give a tool a hand-written input schema yet.
    registered = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert registered is not None
    registered.parameters = SCHEMA_2020_12
    for prompt in PROMPTS:
        server.add_prompt(Prompt.from_function(prompt))

    server.resource(
        "test://static-text", name="static_text", description="A static text resource for testing"
    )(lambda: "This is the content of the static text resource.")
    server.resource(
        "test://static-binary",
        name="static_binary",
        mime_type="image/png",
        description="A static binary resource (image) for testing",
    )(lambda: base64.b64decode(PNG_1PX))

    def template_data(id: str) -> str:
        """A resource template with parameter substitution"""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    server.resource("test://template/{id}/data")(template_data)
    server.resource(
        "test://watched-resource",
        name="watched_resource",
        description="A resource that can be subscribed to for updates",
    )(lambda: "Watched resource content")
    # Logging and subscriptions have no MCPServer-level API either; the low-level server serves them.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)
    server.completion()(_complete)  # type: ignore[no-untyped-call]
