"""sandboxd, the supervisor inside every sandbox: it serves the control protocol
(docs/sandbox-protocol.md) on a Unix socket and runs all user code as the unprivileged user."""

# Standard library only: this file runs under the sandbox's /usr/bin/python3, not Warden's venv.
from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import enum
import errno
import gc
import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

PROTOCOL_VERSION = 1
MAX_LINE = 16 * 2**20
"""Longest request line accepted, per the protocol."""
DEFAULT_READ_BYTES = 10 * 2**20
MAX_READ_BYTES = 12 * 2**20
"""The base64 of a bigger file would not fit in one 16 MiB line."""
MAX_LIST_ENTRIES = 20_000
"""Enough for any workspace a person reads; keeps the answer well under one 16 MiB line."""
MAX_LIST_DEPTH = 32
NOFILE_LIMIT = 4096
KERNEL_REPLY_LIMIT = 32 * 2**20
MAX_QUEUED_LINES = 1000
REAP_GRACE = 5.0
"""How long to wait for a SIGKILLed process to be reaped before giving up on it."""
DRAIN_BUDGET = 4 * 2**20
"""Bytes read from a pipe after its writer finished; bounded so a stray writer cannot hold us."""
DEFAULT_CONTEXT = "default"
USER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
if os.environ.get("WARDEN_BACKEND") == "gvisor":
    # Shims for tools whose coreutils build trips over this gVisor (see bin/ls).
    USER_PATH = "/opt/warden/bin:" + USER_PATH
CONTEXT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

log = logging.getLogger("sandboxd")


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    socket: str = "/run/warden/control.sock"
    workspace: str = "/workspace"
    uid: int = 1000
    gid: int = 1000
    output_limit: int = 1_000_000
    """Bytes of stdout+stderr streamed per request."""
    memory_limit: int = 0
    """RLIMIT_AS of user processes in bytes; 0 = none."""
    pids_limit: int = 0
    """RLIMIT_NPROC of the user; 0 = none."""
    fsize_limit: int = 0
    """RLIMIT_FSIZE of user processes in bytes; 0 = none."""
    default_timeout: float = 60.0
    python: str = sys.executable
    """The interpreter that runs kernels."""
    drop_privileges: bool = True
    """Only when the supervisor runs as root; otherwise user code runs as the current user."""
    egress_port: int = 0
    """Loopback port of the egress relay (programs' HTTP proxy); 0 = no network at all."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SystemExit(f"sandboxd: {name} must be an integer, not {raw!r}") from None
            if value < 0:
                raise SystemExit(f"sandboxd: {name} must not be negative")
            return value

        root = os.geteuid() == 0
        timeout_raw = env.get("WARDEN_DEFAULT_TIMEOUT", "").strip()
        try:
            timeout = float(timeout_raw) if timeout_raw else 60.0
        except ValueError:
            raise SystemExit(
                f"sandboxd: WARDEN_DEFAULT_TIMEOUT must be a number, not {timeout_raw!r}"
            ) from None
        return cls(
            socket=env.get("WARDEN_SOCKET") or "/run/warden/control.sock",
            workspace=env.get("WARDEN_WORKSPACE") or "/workspace",
            uid=integer("WARDEN_UID", 1000) if root else os.getuid(),
            gid=integer("WARDEN_GID", 1000) if root else os.getgid(),
            output_limit=integer("WARDEN_OUTPUT_LIMIT", 1_000_000),
            memory_limit=integer("WARDEN_MEMORY_LIMIT", 0),
            pids_limit=integer("WARDEN_PIDS_LIMIT", 0),
            fsize_limit=integer("WARDEN_FSIZE_LIMIT", 0),
            default_timeout=timeout if timeout > 0 else 60.0,
            python=env.get("WARDEN_PYTHON") or sys.executable,
            drop_privileges=root,
            egress_port=integer("WARDEN_EGRESS_PORT", 0),
        )


class OpError(Exception):
    """An expected failure, answered as `{"type": "error", "code", "message"}`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Outcome(enum.Enum):
    DONE = "done"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


# -- child processes ------------------------------------------------------------------------


class Reaper:
    """The only caller of waitpid. Children we started are registered right after fork, in the
    same event-loop step, so their exit statuses go to their owners; every other zombie (orphans
    re-parented to us as PID 1 or as a subreaper) is reaped and forgotten."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}

    def watch(self, pid: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[pid] = future
        return future

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            future = self._waiters.pop(pid, None)
            if future is None:
                log.debug("reaped orphan %d", pid)
            elif not future.done():
                future.set_result(os.waitstatus_to_exitcode(status))


_SWEEPS: set[asyncio.Task[None]] = set()


def kill_group(pgid: int) -> None:
    """SIGKILL the group, then keep sweeping it for a moment: a member forking while the
    first signal is delivered (a fork bomb) can leave children behind."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    try:
        sweep = asyncio.get_running_loop().create_task(_sweep_group(pgid))
    except RuntimeError:
        return
    _SWEEPS.add(sweep)
    sweep.add_done_callback(_SWEEPS.discard)


async def _sweep_group(pgid: int) -> None:
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return


async def settle(exited: asyncio.Future[int]) -> int | None:
    """Wait (bounded) for a killed process to be reaped; its exit code, or None."""
    try:
        async with asyncio.timeout(REAP_GRACE):
            return await asyncio.shield(exited)
    except TimeoutError:
        log.warning("a killed process was not reaped within %.0fs", REAP_GRACE)
        return None


class LineReader:
    """Lines from a pipe, read as they arrive by the event loop; None once the pipe closes."""

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._open = True
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 2**20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._buffer += data
        while (end := self._buffer.find(b"\n", self._scanned)) >= 0:
            if self._lines.qsize() >= MAX_QUEUED_LINES:
                self._lines.get_nowait()  # junk user code wrote on the pipe; the newest counts
            self._lines.put_nowait(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
            self._scanned = 0
        self._scanned = len(self._buffer)
        if self._scanned > self._limit:
            log.warning("a child wrote a line longer than %d bytes; closing its pipe", self._limit)
            self.close()

    async def readline(self) -> bytes | None:
        line = await self._lines.get()
        if line is None:
            self._lines.put_nowait(None)  # every later reader sees the end too
        return line

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._lines.put_nowait(None)


class PipeWriter:
    """Writes to a pipe without blocking the loop; data for a dead reader is dropped."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self._loop = asyncio.get_running_loop()
        self._open = True
        os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if not self._open:
            return
        if self._pending:
            self._pending += data
            return
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            self.close()
            return
        if written < len(data):
            self._pending += data[written:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_writer(self._fd)
            self._pending.clear()
            os.close(self._fd)


class OutputSink:
    """One request's share of output: streamed as chunks up to the cap, then counted and dropped."""

    def __init__(self, emit: Callable[[dict[str, Any]], None], limit: int) -> None:
        self._emit = emit
        self._room = limit
        self.truncated = False
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")
        }

    def feed(self, stream: str, data: bytes) -> None:
        if len(data) > self._room:
            data = data[: self._room]
            self.truncated = True
        if not data:
            return
        self._room -= len(data)
        text = self._decoders[stream].decode(data)
        if text:
            self._emit({"type": stream, "text": text})

    def finish(self) -> None:
        """Flush a multi-byte character cut in half (it becomes U+FFFD)."""
        for stream, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                self._emit({"type": stream, "text": text})


class OutputPump:
    """Reads a child's stdout and stderr pipes whenever they have data, so the child never
    blocks on a full pipe, and hands the bytes to the current sink (or drops them)."""

    def __init__(self, fds: Mapping[str, int]) -> None:
        self.sink: OutputSink | None = None
        self._fds = dict(fds)
        self._loop = asyncio.get_running_loop()
        for stream, fd in self._fds.items():
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._read, stream)

    def _read(self, stream: str) -> bool:
        """Read once; False when the pipe is empty or closed."""
        fd = self._fds.get(stream)
        if fd is None:
            return False
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_one(stream)
            return False
        if self.sink is not None:
            self.sink.feed(stream, data)
        return True

    def drain(self) -> None:
        """Take what the writer put in the pipes before it finished, which the loop may not have
        read yet: a child flushes its output before it reports a result or exits."""
        for stream in list(self._fds):
            budget = DRAIN_BUDGET
            while budget > 0 and self._read(stream):
                budget -= 65536

    def _close_one(self, stream: str) -> None:
        fd = self._fds.pop(stream, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        for stream in list(self._fds):
            self._close_one(stream)


# -- requests and connections ---------------------------------------------------------------


class Connection:
    """One control stream; messages are written whole, so concurrent requests interleave by line."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.inflight: dict[int, Request] = {}

    def send(self, message: Mapping[str, Any]) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def drain(self) -> None:
        # A host that stops reading must not pin a finished request forever.
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(30):
                await self.writer.drain()


@dataclass(eq=False)
class Request:
    id: int
    op: str
    args: dict[str, Any]
    conn: Connection
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, message: Mapping[str, Any]) -> None:
        self.conn.send({"id": self.id, **message})

    def text(self, key: str, default: str | None = None) -> str:
        value = self.args.get(key, default)
        if not isinstance(value, str):
            raise OpError("bad_request", f"{key!r} must be a string")
        if "\0" in value:
            raise OpError("bad_request", f"{key!r} must not contain NUL")
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.args.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise OpError("bad_request", f"{key!r} must be an integer")
        return value

    def flag(self, key: str) -> bool:
        value = self.args.get(key, False)
        if not isinstance(value, bool):
            raise OpError("bad_request", f"{key!r} must be true or false")
        return value

    def timeout(self, default: float) -> float:
        value = self.args.get("timeout")
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 86400:
            raise OpError("bad_request", "'timeout' must be a number of seconds in (0, 86400]")
        return float(value)

    def env(self) -> dict[str, str]:
        value = self.args.get("env") or {}
        if not isinstance(value, dict):
            raise OpError("bad_request", "'env' must be an object of strings")
        for key, item in value.items():
            if not key or "=" in key or "\0" in key or not isinstance(item, str) or "\0" in item:
                raise OpError("bad_request", f"bad environment variable {key!r}")
        return value

    async def race(self, waits: Iterable[asyncio.Future[Any]], deadline: float) -> Outcome:
        """Wait until one of ``waits`` is done, the deadline passes or the host cancels us."""
        loop = asyncio.get_running_loop()
        cancel = asyncio.ensure_future(self.cancelled.wait())
        pending = {*waits, cancel}
        try:
            done, _ = await asyncio.wait(
                pending, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancel.cancel()
        if done - {cancel}:
            return Outcome.DONE
        return Outcome.CANCELLED if cancel in done else Outcome.TIMEOUT


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


# -- contexts -------------------------------------------------------------------------------


class KernelDied(Exception):
    pass


class Kernel:
    """One kernel.py process: requests on its stdin, replies on a private pipe, output on 1/2."""

    def __init__(self, supervisor: Supervisor) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        reply_r, reply_w = os.pipe()
        parent_ends = (in_w, out_r, err_r, reply_r)
        try:
            self.pid, self.exited = supervisor.spawn(
                [supervisor.config.python, supervisor.kernel_path, str(reply_w)],
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(reply_w,),
                cwd=supervisor.workspace,
                env=supervisor.user_env(),
            )
        except BaseException:
            for fd in parent_ends:
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w, reply_w):
                os.close(fd)
        self.requests = PipeWriter(in_w)
        self.replies = LineReader(reply_r, KERNEL_REPLY_LIMIT)
        self.output = OutputPump({"stdout": out_r, "stderr": err_r})

    async def execute(self, request_id: int, code: str) -> dict[str, Any]:
        self.requests.write(json.dumps({"id": request_id, "code": code}).encode() + b"\n")
        while True:
            line = await self.replies.readline()
            if line is None:
                raise KernelDied
            try:
                reply = json.loads(line)
            except ValueError:
                continue  # user code can write on the reply pipe too; only our id counts
            if isinstance(reply, dict) and reply.get("id") == request_id:
                return reply

    def kill(self) -> None:
        kill_group(self.pid)

    async def stop(self) -> None:
        self.kill()
        await settle(self.exited)
        self.close()

    def close(self) -> None:
        self.requests.close()
        self.replies.close()
        self.output.close()


class Context:
    """A named, persistent Python namespace: a kernel, started on first use and restarted empty
    when it dies, times out or is cancelled. One execution at a time."""

    def __init__(self, name: str, supervisor: Supervisor) -> None:
        self.name = name
        self.supervisor = supervisor
        self.lock = asyncio.Lock()
        self.kernel: Kernel | None = None
        self.deleted = False

    def ensure_kernel(self) -> Kernel:
        if self.kernel is None:
            self.kernel = Kernel(self.supervisor)
        return self.kernel

    async def replace(self, old: Kernel | None, *, start: bool) -> None:
        """Stop ``old`` (unless someone already replaced it) and, if asked, start a new kernel."""
        if old is not None and self.kernel is not old:
            return
        self.kernel = None
        if old is not None:
            await old.stop()
        if start and not self.deleted and self.kernel is None:
            self.kernel = Kernel(self.supervisor)


@dataclass(eq=False)
class Command:
    pid: int
    exited: asyncio.Future[int]
    killed: bool = False

    def kill(self) -> None:
        self.killed = True
        kill_group(self.pid)


# -- file operations (run in a forked child, as the user) -----------------------------------


def resolve(workspace: str, path: str, *, follow_last: bool = True) -> str:
    """The real path ``path`` names inside the workspace, or path_outside_workspace.

    Relative paths start at the workspace. With ``follow_last`` false the last component is
    kept as is, so a symlink itself can be removed."""
    joined = os.path.join(workspace, path)
    head, name = os.path.split(joined.rstrip("/") or "/")
    if follow_last or name in ("", ".", ".."):
        real = os.path.realpath(joined)
    else:
        real = os.path.join(os.path.realpath(head), name)
    if real != workspace and not real.startswith(workspace.rstrip("/") + "/"):
        raise OpError("path_outside_workspace", f"{path} is outside the workspace")
    return real


def os_error(exc: OSError, path: str) -> OpError:
    reason = exc.strerror or str(exc)
    codes = {
        errno.ENOENT: "not_found",
        errno.ENOTDIR: "not_found",
        errno.EISDIR: "is_a_directory",
        errno.ELOOP: "path_outside_workspace",  # a symlink appeared after we resolved the path
        errno.EFBIG: "too_large",
        errno.ENOSPC: "too_large",
        errno.EDQUOT: "too_large",
    }
    return OpError(codes.get(exc.errno or 0, "bad_request"), f"{path}: {reason}")


def file_read(workspace: str, path: str, max_bytes: int) -> dict[str, Any]:
    real = resolve(workspace, path)
    # O_NONBLOCK: opening a FIFO must not hang the worker.
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise OpError("is_a_directory", f"{path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise OpError("bad_request", f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise OpError("too_large", f"{path} has {info.st_size} bytes, more than {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(2**20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise OpError("too_large", f"{path} grew past {max_bytes} bytes")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return {"data": base64.b64encode(data).decode("ascii"), "size": len(data)}


def file_write(workspace: str, path: str, data: bytes, append: bool) -> dict[str, Any]:
    real = resolve(workspace, path)
    if real == workspace:
        raise OpError("is_a_directory", f"{path} is the workspace")
    os.makedirs(os.path.dirname(real), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    flags |= os.O_APPEND if append else os.O_TRUNC
    fd = os.open(real, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OpError("bad_request", f"{path} is not a regular file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return {"size": size}


def _entry_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def file_list(workspace: str, path: str, depth: int) -> dict[str, Any]:
    root = resolve(workspace, path)
    if not stat.S_ISDIR(os.stat(root).st_mode):
        raise OpError("bad_request", f"{path} is not a directory")
    entries: list[dict[str, Any]] = []

    def walk(folder: str, levels: int) -> None:
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            if folder == root:
                raise
            return  # an unreadable subfolder is listed but not entered
        for entry in found:
            if len(entries) >= MAX_LIST_ENTRIES:
                return
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile
            kind = _entry_type(info.st_mode)
            entries.append(
                {
                    "name": entry.name,
                    "path": entry.path,
                    "type": kind,
                    "size": info.st_size,
                    "mtime": info.st_mtime,
                }
            )
            if kind == "dir" and levels > 1:
                walk(entry.path, levels - 1)

    walk(root, depth)
    return {"entries": entries}


def file_remove(workspace: str, path: str, recursive: bool) -> dict[str, Any]:
    real = resolve(workspace, path, follow_last=False)
    if real == workspace:
        raise OpError("bad_request", "the workspace itself cannot be removed")
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        return {"removed": False}
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(real)
    elif recursive:
        shutil.rmtree(real)  # fd-based: never follows a symlink out of the tree
    else:
        try:
            os.rmdir(real)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OpError("is_a_directory", f"{path} is a directory that is not empty") from None
            raise
    return {"removed": True}


# -- the supervisor -------------------------------------------------------------------------


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.workspace = prepare_workspace(config)
        self.kernel_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel.py")
        self.reaper = Reaper()
        self.contexts: dict[str, Context] = {}
        self.commands: dict[int, Command] = {}
        self.ops: dict[str, Handler] = {
            "hello": self.op_hello,
            "run_code": self.op_run_code,
            "context_create": self.op_context_create,
            "context_list": self.op_context_list,
            "context_restart": self.op_context_restart,
            "context_delete": self.op_context_delete,
            "command_run": self.op_command_run,
            "command_kill": self.op_command_kill,
            "file_read": self.op_file_read,
            "file_write": self.op_file_write,
            "file_list": self.op_file_list,
            "file_remove": self.op_file_remove,
            "cancel": self.op_cancel,
        }

    # -- processes as the user ----------------------------------------------------------------

    def user_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # matplotlib and friends cache under /tmp: the workspace stays the user's own files.
        env = {
            "PATH": USER_PATH,
            "HOME": self.workspace,
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "XDG_CACHE_HOME": "/tmp/.cache",
        }
        if self.config.egress_port:
            proxy = f"http://127.0.0.1:{self.config.egress_port}"
            for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
                env[name] = proxy
            env["no_proxy"] = env["NO_PROXY"] = "localhost,127.0.0.1,::1"
        env.update(extra or {})
        return env

    def become_user(self) -> None:
        """In a child between fork and exec: drop to the user, then apply the limits (lowering
        limits needs no privilege, and NPROC must count the user's processes, not root's)."""
        cfg = self.config
        if cfg.drop_privileges:
            os.setgroups([])
            os.setgid(cfg.gid)
            os.setuid(cfg.uid)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, NOFILE_LIMIT)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        for limit, value in (
            (resource.RLIMIT_AS, cfg.memory_limit),
            (resource.RLIMIT_NPROC, cfg.pids_limit),
            (resource.RLIMIT_FSIZE, cfg.fsize_limit),
        ):
            if value:
                resource.setrlimit(limit, (value, value))

    def spawn(
        self,
        argv: list[str],
        *,
        stdin: int,
        stdout: int,
        stderr: int,
        cwd: str,
        env: dict[str, str],
        pass_fds: tuple[int, ...] = (),
    ) -> tuple[int, asyncio.Future[int]]:
        def preexec() -> None:
            self.become_user()
            os.chdir(cwd)  # after the drop, so the user cannot start where it could not go

        # No threads ever run in this process, so preexec_fn is safe here.
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            pass_fds=pass_fds,
            close_fds=True,
            start_new_session=True,
            umask=0o022,
            preexec_fn=preexec,
        )
        exited = self.reaper.watch(proc.pid)

        def record(done: asyncio.Future[int]) -> None:
            # Tell Popen the child is gone, so it never calls waitpid on a reused pid.
            proc.returncode = done.result()

        exited.add_done_callback(record)
        return proc.pid, exited

    async def as_user(self, req: Request, operation: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``operation`` in a forked child that became the user, so a path that races or a
        permission check only reaches what user code could reach anyway."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._file_child(write_end, operation)
        exited = self.reaper.watch(pid)
        os.close(write_end)
        reader = LineReader(read_end, MAX_LINE * 2)
        reply = asyncio.ensure_future(reader.readline())
        try:
            outcome = await req.race([reply], asyncio.get_running_loop().time() + self.config.default_timeout)
            if outcome is not Outcome.DONE:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await settle(exited)
                if outcome is Outcome.TIMEOUT:
                    raise OpError("timeout", f"{req.op} took longer than {self.config.default_timeout:.0f}s")
                raise OpError("internal", "cancelled")
            line = reply.result()
        finally:
            reply.cancel()
            reader.close()
        if line is None:
            code = await settle(exited)
            raise OpError("internal", f"the file worker died (exit code {code})")
        answer = json.loads(line)
        if "error" in answer:
            code, message = answer["error"]
            raise OpError(str(code), str(message))
        result: dict[str, Any] = answer["ok"]
        return result

    def _file_child(self, write_end: int, operation: Callable[[], dict[str, Any]]) -> NoReturn:
        status = 1
        try:
            # A copy of the supervisor: no collection (finalizers of its loop's objects must not
            # run here, and untouched pages stay shared) and none of its signal plumbing.
            gc.disable()
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE then fails with EFBIG
            self.become_user()
            os.umask(0o022)
            try:
                answer: dict[str, Any] = {"ok": operation()}
            except OpError as exc:
                answer = {"error": [exc.code, exc.message]}
            except OSError as exc:
                error = os_error(exc, exc.filename or "")
                answer = {"error": [error.code, error.message]}
            view = memoryview(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            while view:
                view = view[os.write(write_end, view) :]
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)

    # -- ops -------------------------------------------------------------------------------

    async def op_hello(self, req: Request) -> dict[str, Any]:
        return {"version": PROTOCOL_VERSION, "pid": os.getpid(), "contexts": sorted(self.contexts)}

    def _context_name(self, req: Request, key: str = "name", default: str | None = None) -> str:
        name = req.text(key, default)
        if not 0 < len(name) <= 64 or not set(name) <= CONTEXT_NAME_CHARS:
            raise OpError("bad_request", "a context name is 1-64 letters, digits, '_', '.' or '-'")
        return name

    def _context(self, name: str) -> Context:
        context = self.contexts.get(name)
        if context is None:
            raise OpError("no_such_context", f"no context named {name!r}")
        return context

    async def op_context_create(self, req: Request) -> dict[str, Any]:
        name = self._context_name(req)
        if name not in self.contexts:
            context = self.contexts[name] = Context(name, self)
            context.ensure_kernel()  # start it now; the first run_code then pays nothing
        return {"name": name}

    async def op_context_list(self, req: Request) -> dict[str, Any]:
        return {"contexts": [{"name": c.name, "busy": c.lock.locked()} for c in self.contexts.values()]}

    async def op_context_restart(self, req: Request) -> dict[str, Any]:
        context = self._context(self._context_name(req))
        await context.replace(context.kernel, start=True)
        return {"name": context.name}

    async def op_context_delete(self, req: Request) -> dict[str, Any]:
        context = self._context(self._context_name(req))
        context.deleted = True
        del self.contexts[context.name]
        await context.replace(context.kernel, start=False)
        return {"name": context.name}

    async def op_run_code(self, req: Request) -> dict[str, Any]:
        code = req.text("code")
        name = self._context_name(req, "context", DEFAULT_CONTEXT)
        timeout = req.timeout(self.config.default_timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        context = self.contexts.get(name)
        if context is None:
            if name != DEFAULT_CONTEXT:
                raise OpError("no_such_context", f"no context named {name!r}")
            context = self.contexts[name] = Context(name, self)

        # The timeout covers waiting for a busy context, so the host's deadline stays simple.
        acquire = asyncio.ensure_future(context.lock.acquire())
        outcome = await req.race([acquire], deadline)
        if outcome is not Outcome.DONE:
            acquire.cancel()
            await asyncio.wait([acquire])
            if not acquire.cancelled():
                context.lock.release()  # it was granted just as we gave up
            why = "was cancelled" if outcome is Outcome.CANCELLED else f"waited {timeout:g}s"
            name_ = "Cancelled" if outcome is Outcome.CANCELLED else "TimeoutError"
            return run_result(error=user_error(name_, f"context {name!r} was busy and the request {why}"))
        try:
            if context.deleted:
                raise OpError("no_such_context", f"context {name!r} was deleted")
            return await self._execute(context, req, code, timeout, deadline)
        finally:
            context.lock.release()

    async def _execute(
        self, context: Context, req: Request, code: str, timeout: float, deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        restarted = False
        if context.kernel is not None and context.kernel.exited.done():
            # It died between requests (os._exit in a thread, say): this run starts fresh.
            await context.replace(context.kernel, start=True)
            restarted = True
        kernel = context.ensure_kernel()
        sink = OutputSink(req.emit, self.config.output_limit)
        kernel.output.sink = sink
        started = loop.time()
        reply = asyncio.ensure_future(kernel.execute(req.id, code))
        exit_code: int | None = None
        try:
            outcome = await req.race([reply, kernel.exited], deadline)
            answer = reply.result() if reply.done() and reply.exception() is None else None
            if answer is None:
                kernel.kill()
                exit_code = await settle(kernel.exited)
            kernel.output.drain()
        finally:
            reply.cancel()
            kernel.output.sink = None
            sink.finish()
        duration_ms = round((loop.time() - started) * 1000, 3)
        if answer is not None:
            return run_result(
                value=answer.get("value"),
                results=answer.get("results"),
                error=answer.get("error"),
                duration_ms=duration_ms,
                truncated=sink.truncated,
                restarted=restarted,
            )
        await context.replace(kernel, start=True)
        if outcome is Outcome.TIMEOUT:
            error = user_error("TimeoutError", f"execution exceeded {timeout:g}s; the context was restarted")
        elif outcome is Outcome.CANCELLED:
            error = user_error("Cancelled", "execution was cancelled; the context was restarted")
        else:
            error = user_error(
                "KernelDied", f"the kernel exited (code {exit_code}); the context was restarted"
            )
        return run_result(error=error, duration_ms=duration_ms, truncated=sink.truncated, restarted=True)

    async def op_command_run(self, req: Request) -> dict[str, Any]:
        cmd = req.text("cmd")
        timeout = req.timeout(self.config.default_timeout)
        env = self.user_env(req.env())
        cwd = os.path.join(self.workspace, req.text("cwd", self.workspace))
        background = req.flag("background")
        deadline = asyncio.get_running_loop().time() + timeout
        pipes = None if background else (os.pipe(), os.pipe())
        try:
            pid, exited = self.spawn(
                ["/bin/sh", "-c", cmd],
                stdin=subprocess.DEVNULL,
                stdout=pipes[0][1] if pipes else subprocess.DEVNULL,
                stderr=pipes[1][1] if pipes else subprocess.DEVNULL,
                cwd=cwd,
                env=env,
            )
        except BaseException as exc:
            for read_end, _ in pipes or ():
                os.close(read_end)
            if isinstance(exc, subprocess.SubprocessError):  # preexec failed: chdir, as the user
                raise OpError("bad_request", f"cannot run in {cwd}: missing or not accessible") from None
            raise
        finally:
            for _, write_end in pipes or ():
                os.close(write_end)
        command = self.commands[pid] = Command(pid, exited)
        exited.add_done_callback(lambda _: self.commands.pop(pid, None))
        if pipes is None:
            return {"pid": pid}

        pump = OutputPump({"stdout": pipes[0][0], "stderr": pipes[1][0]})
        sink = pump.sink = OutputSink(req.emit, self.config.output_limit)
        try:
            outcome = await req.race([exited], deadline)
            if outcome is not Outcome.DONE:
                command.kill()
            exit_code = await settle(exited)
            # A foreground command takes what it started with it (`background` is for processes
            # meant to outlive the call); otherwise a fork bomb's children would hold the
            # user's process limit forever.
            kill_group(pid)
            pump.drain()
        finally:
            pump.close()
            sink.finish()
        return {
            "exit_code": None if command.killed else exit_code,
            "timed_out": outcome is Outcome.TIMEOUT,
            "stdout_truncated": sink.truncated,
            "pid": pid,
        }

    async def op_command_kill(self, req: Request) -> dict[str, Any]:
        # Only commands we started: as root, any other pid could be the supervisor itself.
        command = self.commands.get(req.integer("pid"))
        if command is None:
            return {"killed": False}
        command.kill()
        return {"killed": True}

    async def op_file_read(self, req: Request) -> dict[str, Any]:
        path = req.text("path")
        max_bytes = min(req.integer("max_bytes", DEFAULT_READ_BYTES), MAX_READ_BYTES)
        return await self.as_user(req, lambda: file_read(self.workspace, path, max_bytes))

    async def op_file_write(self, req: Request) -> dict[str, Any]:
        path = req.text("path")
        try:
            data = base64.b64decode(req.text("data"), validate=True)
        except binascii.Error:
            raise OpError("bad_request", "'data' must be base64") from None
        append = req.flag("append")
        return await self.as_user(req, lambda: file_write(self.workspace, path, data, append))

    async def op_file_list(self, req: Request) -> dict[str, Any]:
        path = req.text("path", self.workspace)
        depth = req.integer("depth", 1)
        if not 1 <= depth <= MAX_LIST_DEPTH:
            raise OpError("bad_request", f"'depth' must be between 1 and {MAX_LIST_DEPTH}")
        return await self.as_user(req, lambda: file_list(self.workspace, path, depth))

    async def op_file_remove(self, req: Request) -> dict[str, Any]:
        path = req.text("path")
        recursive = req.flag("recursive")
        return await self.as_user(req, lambda: file_remove(self.workspace, path, recursive))

    async def op_cancel(self, req: Request) -> dict[str, Any]:
        target = req.conn.inflight.get(req.integer("target"))
        if target is None or target is req:
            return {"cancelled": False}
        target.cancelled.set()
        return {"cancelled": True}

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than the limit: the stream is out of step, end it
                    conn.send(protocol_error(None, "bad_request", f"a line is longer than {MAX_LINE} bytes"))
                    break
                except ConnectionError:
                    break
                if not line:
                    break
                if line.strip():
                    self.dispatch(conn, line, tasks)
        finally:
            # Requests already running finish (each has a deadline); their answers go nowhere
            # if the host has gone, but the code they run is not killed half-way.
            if tasks:
                await asyncio.wait(tasks)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def dispatch(self, conn: Connection, line: bytes, tasks: set[asyncio.Task[None]]) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            conn.send(protocol_error(None, "bad_request", "not a JSON object"))
            return
        if not isinstance(message, dict):
            conn.send(protocol_error(None, "bad_request", "not a JSON object"))
            return
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            conn.send(protocol_error(None, "bad_request", "'id' must be an integer"))
            return
        if request_id in conn.inflight:
            # Answered without the id: that id's final message belongs to the first request.
            conn.send(protocol_error(None, "bad_request", f"id {request_id} is already in flight"))
            return
        op = message.get("op")
        handler = self.ops.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.send(protocol_error(request_id, "unknown_op", f"unknown op {op!r}"))
            return
        req = conn.inflight[request_id] = Request(request_id, str(op), message, conn)
        task = asyncio.create_task(self.handle(req, handler))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def handle(self, req: Request, handler: Handler) -> None:
        try:
            result = await handler(req)
        except OpError as exc:
            req.conn.send(protocol_error(req.id, exc.code, exc.message))
        except Exception as exc:
            log.exception("%s failed", req.op)
            req.conn.send(protocol_error(req.id, "internal", f"{type(exc).__name__}: {exc}"))
        else:
            req.conn.send({"id": req.id, "type": "result", **result})
        finally:
            req.conn.inflight.pop(req.id, None)
        await req.conn.drain()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self.reaper.reap)
        self.reaper.reap()  # whatever exited before the handler was in place
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        prepare_socket(self.config.socket)
        server = await asyncio.start_unix_server(self.serve, self.config.socket, limit=MAX_LINE + 1)
        log.info("listening on %s (pid %d)", self.config.socket, os.getpid())
        relay = EgressRelay(self.config) if self.config.egress_port else None
        if relay is not None:
            await relay.start()
        try:
            await stop.wait()
        finally:
            server.close()
            if relay is not None:
                relay.close()
            for context in self.contexts.values():
                if context.kernel is not None:
                    context.kernel.kill()
            for command in self.commands.values():
                command.kill()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config.socket)


class EgressRelay:
    """Programs' HTTP proxy at 127.0.0.1:<egress_port>: every connection is relayed, unread,
    through the tunnel the host attaches at ``egress.sock``; the host parses, decides and
    connects. The sandbox never gets a network interface of its own.

    The port listens only while a tunnel is attached, and detaching aborts the relayed
    connections: gVisor cannot checkpoint a sandbox holding TCP sockets, so the host detaches
    before every checkpoint and attaches again after the restore."""

    def __init__(self, config: Config) -> None:
        self.port = config.egress_port
        self.socket = os.path.join(os.path.dirname(config.socket) or ".", "egress.sock")
        self.tunnel: Any = None
        """The most recently attached live tunnel."""
        self._control: asyncio.AbstractServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._relayed: set[asyncio.StreamWriter] = set()
        try:
            from warden.sandbox.guest import tunnel  # on the host (tests import this module)
        except ImportError:
            import tunnel  # type: ignore[import-not-found,no-redef]  # in the sandbox: next to this file
        self._tunnel_module = tunnel

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self._control = await asyncio.start_unix_server(self._attach, self.socket)
        log.info("egress relay: host tunnel at %s, programs' proxy at 127.0.0.1:%d", self.socket, self.port)

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
        self._stop_listening()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    async def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tunnel = self._tunnel_module.Tunnel(reader, writer)
        self.tunnel = tunnel
        try:
            if self._listener is None:
                self._listener = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
            tunnel.send(0, self._tunnel_module.READY)
            await tunnel.run()
        except self._tunnel_module.TunnelError as exc:
            log.warning("egress tunnel closed: %s", exc)
        except OSError as exc:
            log.warning("egress relay cannot listen on port %d: %s", self.port, exc)
        finally:
            if self.tunnel is tunnel:
                self.tunnel = None
                self._stop_listening()
            await tunnel.aclose()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for writer in list(self._relayed):
            writer.transport.abort()
        self._relayed.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tunnel = self.tunnel
        try:
            if tunnel is None or tunnel.closed:
                raise ConnectionRefusedError("the host's egress proxy is not attached")
            channel = tunnel.open()
        except (ConnectionError, OSError) as exc:
            body = f"warden egress: unavailable ({exc})\n".encode()
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self._relayed.add(writer)
        try:
            await self._tunnel_module.splice(channel, reader, writer)
        finally:
            self._relayed.discard(writer)


def run_result(
    *,
    value: Any = None,
    results: Any = None,
    error: Any = None,
    duration_ms: float = 0.0,
    truncated: bool = False,
    restarted: bool = False,
) -> dict[str, Any]:
    # The kernel runs user code, so its reply is checked before it reaches the host.
    return {
        "value": value if isinstance(value, str) else None,
        "results": [r for r in results if isinstance(r, dict)] if isinstance(results, list) else [],
        "error": error if isinstance(error, dict) else None,
        "duration_ms": duration_ms,
        "stdout_truncated": truncated,
        "context_restarted": restarted,
    }


def user_error(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value, "traceback": ""}


def protocol_error(request_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "type": "error", "code": code, "message": message}


def prepare_workspace(config: Config) -> str:
    """The workspace's real path (file operations compare against it), created if missing."""
    if not os.path.isdir(config.workspace):
        os.makedirs(config.workspace, mode=0o755, exist_ok=True)
        if config.drop_privileges:
            os.chown(config.workspace, config.uid, config.gid)
    return os.path.realpath(config.workspace)


def prepare_socket(path: str) -> None:
    """Make the socket's directory root-only (0700) and clear a stale socket."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # makedirs' mode is filtered by the umask
    elif stat.S_IMODE(os.stat(folder).st_mode) & 0o077:
        log.warning("%s is reachable by other users; the protocol expects it to be 0700", folder)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def become_subreaper() -> None:
    """Outside PID 1 (bubblewrap, tests), adopt orphans anyway so they are reaped the same way."""
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return
    import ctypes  # only here: the supervisor otherwise needs nothing beyond pure-Python modules

    pr_set_child_subreaper = 36
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("WARDEN_LOG_LEVEL", "INFO").upper(),
        format="sandboxd: %(levelname)s %(message)s",
    )
    config = Config.from_env(os.environ)
    os.umask(0o077)
    become_subreaper()
    asyncio.run(Supervisor(config).run())


if __name__ == "__main__":
    main()
