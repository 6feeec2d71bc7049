"""The Python kernel: one process per context, started by sandboxd as the sandbox user. It runs
cells in one persistent ``__main__`` namespace and reports each result on a private pipe."""

# Standard library only, and only cheap modules at start-up: every context restart pays for them.
from __future__ import annotations

import ast
import base64
import builtins
import io
import json
import linecache
import os
import sys
import time
import traceback
import types
import warnings
from typing import Any

# The whole reply must fit the protocol's 16 MiB line even when JSON escapes every character.
MAX_TEXT_CHARS = 100_000
"""Of the value's repr, the error message and the traceback, each."""
MAX_IMAGE_BYTES = 12 * 2**20
"""Base64 of all figures of one cell."""
CO_COROUTINE = 0x80
"""inspect.CO_COROUTINE, without importing inspect: a cell with top-level await compiles to one."""
CELL_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
"""And dont_inherit=True: this module's own `from __future__` imports must not reach user cells."""


class Kernel:
    def __init__(self) -> None:
        # Our own module stays alive through these methods' globals; user code gets a fresh
        # __main__ so pickle and multiprocessing find what the cells define.
        self.main = types.ModuleType("__main__")
        self.namespace = self.main.__dict__
        self.namespace["__builtins__"] = builtins
        sys.modules["__main__"] = self.main
        self.cells = 0
        self._loop: Any = None

    def run(self, code: str) -> dict[str, Any]:
        self.cells += 1
        filename = f"<cell-{self.cells}>"
        # Tracebacks show the cell's lines; mtime None keeps linecache.checkcache from dropping it.
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        value: str | None = None
        error: dict[str, str] | None = None
        started = time.perf_counter()
        try:
            tree = ast.parse(code, filename)
            last = None
            if tree.body and isinstance(final := tree.body[-1], ast.Expr):
                tree.body.pop()
                last = ast.Expression(final.value)
            self._evaluate(compile(tree, filename, "exec", flags=CELL_FLAGS, dont_inherit=True))
            if last is not None:
                result = self._evaluate(compile(last, filename, "eval", flags=CELL_FLAGS, dont_inherit=True))
                if result is not None:
                    self.namespace["_"] = result
                    value = clip(repr(result))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the kernel lives on
            error = describe(exc)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return {"value": value, "error": error, "results": figures(), "duration_ms": duration_ms}

    def _evaluate(self, code: types.CodeType) -> Any:
        result = eval(code, self.namespace)
        if code.co_flags & CO_COROUTINE:
            result = self._run_async(result)
        return result

    def _run_async(self, coroutine: Any) -> Any:
        import asyncio  # only for cells that use top-level await

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)


def describe(exc: BaseException) -> dict[str, str]:
    # User code always starts in a cell: what comes before (this file, asyncio for top-level
    # await) is ours. A syntax error has no cell frame at all and shows only its message.
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    lines = traceback.format_exception(type(exc), exc, tb)
    return {"name": type(exc).__name__, "value": clip(message), "traceback": clip("".join(lines))}


def clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"… [{len(text) - MAX_TEXT_CHARS} more characters]"


def figures() -> list[dict[str, str]]:
    """Every open matplotlib figure as a PNG, then closed; nothing unless the user imported
    pyplot (importing matplotlib ourselves would cost every cell a second)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    results: list[dict[str, str]] = []
    total = 0
    try:
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            data = base64.b64encode(buffer.getvalue()).decode("ascii")
            total += len(data)
            if total > MAX_IMAGE_BYTES:
                print("warden: figures beyond 12 MiB were dropped", file=sys.stderr)
                break
            results.append({"type": "image/png", "data": data})
    except Exception:
        traceback.print_exc()
    finally:
        try:
            pyplot.close("all")
        except Exception:
            traceback.print_exc()
    return results


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass  # a user replaced or closed it; nothing of ours to lose


def main(argv: list[str]) -> None:
    reply_fd = int(argv[1]) if len(argv) > 1 else 3
    os.set_inheritable(reply_fd, False)  # not for the user's subprocesses
    # Requests move off fd 0, so input() in a cell reads /dev/null instead of our protocol.
    requests = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    replies = os.fdopen(reply_fd, "wb")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a pipe is block-buffered; users expect lines live
    sys.path[0] = ""  # the workspace (cwd), as in Jupyter, rather than this script's folder
    sys.argv = [""]
    # plt.show() cannot show anything here; figures are returned after the cell instead.
    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    kernel = Kernel()
    for raw in requests:
        try:
            request = json.loads(raw)
            request_id, code = request["id"], request["code"]
        except (ValueError, KeyError, TypeError):
            continue
        reply = kernel.run(code)
        reply["id"] = request_id
        flush_output()  # before the reply: the supervisor drains 1/2 on seeing it
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    main(sys.argv)
