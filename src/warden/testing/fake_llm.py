"""`FakeLLMServer`: a real loopback HTTP server speaking the OpenAI chat-completions and Anthropic
messages wire protocols, replaying `Script`s so providers are tested through their real SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from warden.models.base import WIRE_TOOL_NAME, Message, ToolCall, ToolSpec, Usage
from warden.models.script import RenderedStep, Script, ScriptStep, chunks, render_step
from warden.models.scripted import estimate_usage

StepFunction = Callable[[list[Message], list[ToolSpec]], ScriptStep | Awaitable[ScriptStep]]
"""What `FakeLLMServer.add_function` registers: the conversation and tools in, the next turn out."""

Wire = Literal["openai", "anthropic"]
Part = tuple[float, bytes]
"""(seconds to wait before sending, bytes to send)."""

STARTUP_TIMEOUT = 10.0

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# --- wire messages back to provider-neutral ones (for step selection and templates) ---


def _text_of(content: Any) -> str:
    """Text of a content field that is either a string or a list of content parts/blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)
    return str(content)


def openai_messages(body: Mapping[str, Any]) -> list[Message]:
    out: list[Message] = []
    for m in body.get("messages") or ():
        role = m.get("role")
        if role in ("system", "developer"):
            out.append(Message(role="system", content=_text_of(m.get("content"))))
        elif role == "assistant":
            calls = tuple(
                ToolCall(
                    id=str(c.get("id", "")),
                    name=str((c.get("function") or {}).get("name", "")),
                    arguments=str((c.get("function") or {}).get("arguments", "")),
                )
                for c in m.get("tool_calls") or ()
            )
            out.append(Message(role="assistant", content=_text_of(m.get("content")), tool_calls=calls))
        elif role == "tool":
            out.append(
                Message(role="tool", content=_text_of(m.get("content")), tool_call_id=m.get("tool_call_id"))
            )
        else:
            out.append(Message(role="user", content=_text_of(m.get("content"))))
    return out


def openai_tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for t in body.get("tools") or ():
        fn = t.get("function") or {}
        specs.append(
            ToolSpec(str(fn.get("name", "")), str(fn.get("description", "")), fn.get("parameters") or {})
        )
    return specs


def anthropic_messages(body: Mapping[str, Any]) -> list[Message]:
    out: list[Message] = []
    system = _text_of(body.get("system"))
    if system:
        out.append(Message(role="system", content=system))
    for m in body.get("messages") or ():
        content = m.get("content")
        if m.get("role") == "assistant":
            blocks = content if isinstance(content, list) else [{"type": "text", "text": _text_of(content)}]
            text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
            calls = tuple(
                ToolCall(
                    id=str(b.get("id", "")), name=str(b.get("name", "")), arguments=json.dumps(b.get("input"))
                )
                for b in blocks
                if b.get("type") == "tool_use"
            )
            out.append(Message(role="assistant", content=text, tool_calls=calls))
            continue
        if not isinstance(content, list):
            out.append(Message(role="user", content=_text_of(content)))
            continue
        for b in content:
            if b.get("type") == "tool_result":
                out.append(
                    Message(
                        role="tool",
                        content=_text_of(b.get("content")),
                        tool_call_id=b.get("tool_use_id"),
                        is_error=bool(b.get("is_error", False)),
                    )
                )
        text = "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
        if text:
            out.append(Message(role="user", content=text))
    return out


def anthropic_tools(body: Mapping[str, Any]) -> list[ToolSpec]:
    return [
        ToolSpec(str(t.get("name", "")), str(t.get("description", "")), t.get("input_schema") or {})
        for t in body.get("tools") or ()
    ]


# --- replies ---


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _event(kind: str, **fields: Any) -> bytes:
    """One Anthropic stream event: the SSE event name repeats the payload's `type`."""
    return _sse({"type": kind, **fields}, kind)


def _json_arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _error_body(wire: Wire, status: int, message: str) -> dict[str, Any]:
    if wire == "anthropic":
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = (
        "rate_limit_exceeded"
        if status == 429
        else ("server_error" if status >= 500 else "invalid_request_error")
    )
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


@dataclass(frozen=True, slots=True)
class _Plan:
    """The whole reply to one request, decided up front; `_TimedReply` sends it."""

    status: int
    headers: dict[str, str]
    parts: list[Part]
    delay: float = 0.0
    """Seconds before the status line."""


def _json_plan(status: int, body: Any, delay: float = 0.0, headers: Mapping[str, str] | None = None) -> _Plan:
    return _Plan(
        status,
        {"content-type": "application/json", **(headers or {})},
        [(0.0, json.dumps(body).encode())],
        delay,
    )


def _error_plan(wire: Wire, status: int, message: str, delay: float = 0.0) -> _Plan:
    # `retry-after: 0` alone still leaves the SDKs on their exponential backoff (they only honour
    # positive values), so a millisecond `retry-after-ms` keeps retries in tests fast.
    headers = {"retry-after": "0", "retry-after-ms": "1"} if status == 429 or status >= 500 else {}
    return _json_plan(status, _error_body(wire, status, message), delay, headers)


def _openai_plan(
    model: str, step: ScriptStep, rendered: RenderedStep, body: Mapping[str, Any], usage: Usage
) -> _Plan:
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    finish = "tool_calls" if rendered.tool_calls else "stop"
    usage_body = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if not body.get("stream"):
        if step.malformed:
            return _Plan(
                200,
                {"content-type": "application/json"},
                [(0.0, b'{"id": "broken", "choices": [')],
                step.delay,
            )
        message: dict[str, Any] = {"role": "assistant", "content": rendered.text or None}
        if rendered.tool_calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in rendered.tool_calls
            ]
        reply = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage_body,
        }
        return _json_plan(200, reply, step.delay)

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _sse(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
        )

    parts: list[Part] = [(0.0, chunk({"role": "assistant", "content": ""}))]
    if step.malformed:
        parts.append((step.chunk_delay, b'data: {"id": "broken", "choices": [\n\n'))
        return _Plan(200, {"content-type": "text/event-stream"}, parts, step.delay)
    deltas: list[bytes] = [chunk({"content": piece}) for piece in chunks(rendered.text, step.chunk_size)]
    for index, (call_id, name, arguments) in enumerate(rendered.tool_calls):
        head = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas.append(chunk({"tool_calls": [head]}))
        deltas.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in chunks(arguments, step.chunk_size)
        )
    parts.extend((step.chunk_delay if i else 0.0, d) for i, d in enumerate(deltas))
    parts.append((0.0, chunk({}, finish)))
    if (body.get("stream_options") or {}).get("include_usage"):
        tail = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
        }
        parts.append((0.0, _sse({**tail, "usage": usage_body})))
    parts.append((0.0, b"data: [DONE]\n\n"))
    return _Plan(200, {"content-type": "text/event-stream", "cache-control": "no-cache"}, parts, step.delay)


def _anthropic_plan(
    model: str, step: ScriptStep, rendered: RenderedStep, body: Mapping[str, Any], usage: Usage
) -> _Plan:
    mid = f"msg_{uuid.uuid4().hex[:24]}"
    stop = "tool_use" if rendered.tool_calls else "end_turn"
    if not body.get("stream"):
        if step.malformed:
            return _Plan(
                200,
                {"content-type": "application/json"},
                [(0.0, b'{"id": "broken", "content": [')],
                step.delay,
            )
        content: list[dict[str, Any]] = []
        if rendered.text:
            content.append({"type": "text", "text": rendered.text})
        content.extend(
            {"type": "tool_use", "id": i, "name": n, "input": _json_arguments(a)}
            for i, n, a in rendered.tool_calls
        )
        reply = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }
        return _json_plan(200, reply, step.delay)

    start: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1},
    }
    parts: list[Part] = [(0.0, _event("message_start", message=start)), (0.0, _event("ping"))]
    if step.malformed:
        broken = b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {\n\n'
        parts.append((step.chunk_delay, broken))
        return _Plan(200, {"content-type": "text/event-stream"}, parts, step.delay)
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if rendered.text:
        text_deltas = [{"type": "text_delta", "text": p} for p in chunks(rendered.text, step.chunk_size)]
        blocks.append(({"type": "text", "text": ""}, text_deltas))
    for call_id, name, arguments in rendered.tool_calls:
        json_deltas = [
            {"type": "input_json_delta", "partial_json": p} for p in chunks(arguments, step.chunk_size)
        ]
        blocks.append(({"type": "tool_use", "id": call_id, "name": name, "input": {}}, json_deltas))
    pause = 0.0  # chunk_delay goes between deltas, not before the first
    for index, (block, deltas) in enumerate(blocks):
        parts.append((0.0, _event("content_block_start", index=index, content_block=block)))
        for delta in deltas:
            parts.append((pause, _event("content_block_delta", index=index, delta=delta)))
            pause = step.chunk_delay
        parts.append((0.0, _event("content_block_stop", index=index)))
    message_delta = {
        "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": {"output_tokens": usage.output_tokens},
    }
    parts.append((0.0, _event("message_delta", **message_delta)))
    parts.append((0.0, _event("message_stop")))
    return _Plan(200, {"content-type": "text/event-stream", "cache-control": "no-cache"}, parts, step.delay)


class _TimedReply(Response):
    """Sends a `_Plan` on its schedule and gives up the moment the client disconnects.

    Starlette's own streaming response does not watch for disconnects while the body generator
    sleeps, so a cancelled client would leave the server "streaming" into the void."""

    def __init__(self, server: FakeLLMServer, plan: _Plan) -> None:
        self._server = server
        self._plan = plan
        self.status_code = plan.status
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._server._stream_opened()
        try:
            producer = asyncio.ensure_future(self._produce(send))
            watcher = asyncio.ensure_future(self._wait_for_disconnect(receive))
            try:
                await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (producer, watcher):
                    task.cancel()
                await asyncio.gather(producer, watcher, return_exceptions=True)
        finally:
            self._server._stream_closed()

    async def _produce(self, send: Send) -> None:
        plan = self._plan
        if plan.delay:
            await asyncio.sleep(plan.delay)
        headers = dict(plan.headers)
        if not headers.get("content-type", "").startswith("text/event-stream"):
            headers["content-length"] = str(sum(len(data) for _, data in plan.parts))
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": plan.status, "headers": raw_headers})
        for pause, data in plan.parts:
            if pause:
                await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _wait_for_disconnect(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return


class FakeLLMServer:
    """An OpenAI- and Anthropic-compatible model server on 127.0.0.1 that replays scripts.

    The request's ``model`` picks the script (or function); the step is chosen by the number of
    assistant turns in the conversation, as `Script.step_for` does. Use it as a context manager
    (sync or async); point OpenAI clients at `url` and Anthropic clients at `anthropic_url`.
    """

    def __init__(
        self, scripts: Iterable[Script] = (), *, functions: Mapping[str, StepFunction] | None = None
    ) -> None:
        self._sources: dict[str, Script | StepFunction] = {}
        for script in scripts:
            self.add_script(script)
        for name, fn in (functions or {}).items():
            self.add_function(name, fn)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """Every chat request received, as (model, parsed JSON body), in arrival order."""
        self._failures: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai_chat, methods=["POST"]),
                Route("/v1/messages", self._anthropic_messages, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
            ]
        )

    # --- registration and inspection ---

    def add_script(self, script: Script, name: str | None = None) -> None:
        """Serve `script` to requests whose ``model`` is `name` (the script's own name by default)."""
        self._sources[name or script.name] = script

    def add_function(self, name: str, fn: StepFunction) -> None:
        """Serve requests for model `name` with ``fn(messages, tools)``, sync or async."""
        self._sources[name] = fn

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [body for m, body in list(self.requests) if m == model]

    @property
    def active_streams(self) -> int:
        """Replies still being sent (streamed or delayed); drops as soon as a client disconnects."""
        with self._lock:
            return self._active

    async def wait_for_streams(self, count: int = 0, *, within: float = 5.0) -> None:
        """Wait until `active_streams` is `count`; `TimeoutError` after `within` seconds."""
        changed = asyncio.Event()
        # The count changes on the server's thread; it wakes this loop through call_soon_threadsafe.
        waiter = (asyncio.get_running_loop(), changed)
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(within):
                while self.active_streams != count:
                    await changed.wait()
                    changed.clear()
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLLMServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients (``…/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """Base URL for Anthropic clients, which add ``/v1/messages`` themselves."""
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ---

    def start(self) -> None:
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the host process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-llm", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("FakeLLMServer did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLMServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # --- request handling (runs on the server's own thread and loop) ---

    def _stream_opened(self) -> None:
        self._change_active(+1)

    def _stream_closed(self) -> None:
        self._change_active(-1)

    def _change_active(self, by: int) -> None:
        with self._lock:
            self._active += by
            waiters = list(self._waiters)
        for loop, changed in waiters:
            # A waiter whose loop has already closed has nothing left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(changed.set)

    async def _list_models(self, request: Request) -> Response:
        names = sorted(self._sources)
        if "anthropic-version" in request.headers:
            data: list[dict[str, Any]] = [
                {"type": "model", "id": n, "display_name": n, "created_at": "2024-01-01T00:00:00Z"}
                for n in names
            ]
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            data = [{"id": n, "object": "model", "created": 0, "owned_by": "warden-fake"} for n in names]
            body = {"object": "list", "data": data}
        return Response(json.dumps(body), media_type="application/json")

    async def _openai_chat(self, request: Request) -> Response:
        return await self._chat(request, "openai")

    async def _anthropic_messages(self, request: Request) -> Response:
        return await self._chat(request, "anthropic")

    async def _chat(self, request: Request, wire: Wire) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _TimedReply(self, _error_plan(wire, 400, "request body is not valid JSON"))
        if not isinstance(body, dict):
            return _TimedReply(self, _error_plan(wire, 400, "request body must be a JSON object"))
        model = str(body.get("model", ""))
        self.requests.append((model, body))
        source = self._sources.get(model)
        if source is None:
            known = ", ".join(sorted(self._sources)) or "none"
            return _TimedReply(self, _error_plan(wire, 404, f"model {model!r} not found (known: {known})"))
        messages = openai_messages(body) if wire == "openai" else anthropic_messages(body)
        tools = openai_tools(body) if wire == "openai" else anthropic_tools(body)
        for index, tool in enumerate(tools):
            # As the real APIs do: a name outside this pattern is a 400 for the whole request.
            if not WIRE_TOOL_NAME.match(tool.name):
                where = f"tools[{index}].function.name" if wire == "openai" else f"tools.{index}.name"
                message = f"Invalid '{where}': string does not match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                return _TimedReply(self, _error_plan(wire, 400, message))
        if isinstance(source, Script):
            step = source.step_for(messages)
        else:
            result = source(messages, tools)
            step = await result if inspect.isawaitable(result) else result
        if step.error is not None:
            digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
            seen = self._failures.get((model, digest), 0)
            if seen < step.error.times:
                self._failures[(model, digest)] = seen + 1
                return _TimedReply(self, _error_plan(wire, step.error.status, step.error.message, step.delay))
        rendered = render_step(step, messages, call_id_prefix="call" if wire == "openai" else "toolu")
        usage = estimate_usage(step, messages, rendered.text, [args for _, _, args in rendered.tool_calls])
        plan_for = _openai_plan if wire == "openai" else _anthropic_plan
        return _TimedReply(self, plan_for(model, step, rendered, body, usage))
