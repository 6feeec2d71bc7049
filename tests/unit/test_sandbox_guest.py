"""The guest supervisor and kernel speaking the control protocol, run directly on this host (no
isolation: only the protocol is under test) and driven through `GuestChannel`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from warden.sandbox.backend import ControlStream, SandboxError
from warden.sandbox.channel import GuestChannel
from warden.sandbox.guest import guest_dir

# Debian's interpreter, as inside sandboxes: it has numpy and matplotlib, the venv's has not.
SYSTEM_PYTHON = "/usr/bin/python3"
AS_ROOT = os.geteuid() == 0
USER_UID = 1000

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="the guest runs on Linux under /usr/bin/python3",
)


@dataclass
class Guest:
    process: asyncio.subprocess.Process
    socket: str
    workspace: Path
    channel: GuestChannel = field(init=False)
    log: list[str] = field(default_factory=list)

    async def open_stream(self) -> ControlStream:
        reader, writer = await asyncio.open_unix_connection(self.socket, limit=32 * 2**20)
        return ControlStream(reader, writer)

    async def run(self, code: str, **args: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The final result of run_code and the chunks that came before it."""
        chunks: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        async for message in self.channel.request("run_code", code=code, **args):
            if message["type"] == "result":
                final = message
            else:
                chunks.append(message)
        return final, chunks

    async def command(self, cmd: str, **args: Any) -> tuple[dict[str, Any], str]:
        final: dict[str, Any] = {}
        out: list[str] = []
        async for message in self.channel.request("command_run", cmd=cmd, **args):
            if message["type"] == "result":
                final = message
            else:
                out.append(message["text"])
        return final, "".join(out)


GuestFactory = Callable[..., Awaitable[Guest]]


@pytest.fixture
async def start_guest(tmp_path: Path) -> AsyncIterator[GuestFactory]:
    """Start supervisors; as root they drop user code to uid 1000 as in a sandbox, which needs
    a folder that uid can walk into (pytest's own tmp folders are root-only)."""
    base = Path(tempfile.mkdtemp(prefix="warden-guest-")) if AS_ROOT else tmp_path
    base.chmod(0o711)
    guests: list[Guest] = []
    log_tasks: list[asyncio.Task[None]] = []

    async def start(**env: str) -> Guest:
        n = len(guests)
        workspace = base / f"workspace{n}"
        workspace.mkdir()
        if AS_ROOT:
            os.chown(workspace, USER_UID, USER_UID)
        socket = str(base / f"run{n}" / "control.sock")
        process = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON,
            str(guest_dir() / "sandboxd.py"),
            stderr=asyncio.subprocess.PIPE,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "WARDEN_SOCKET": socket,
                "WARDEN_WORKSPACE": str(workspace),
                **env,
            },
        )
        guest = Guest(process, socket, workspace)
        guests.append(guest)
        assert process.stderr is not None
        async with asyncio.timeout(10):
            while "listening on" not in (line := (await process.stderr.readline()).decode()):
                assert line, f"sandboxd exited: {''.join(guest.log)}"
                guest.log.append(line)

        async def keep_log(stream: asyncio.StreamReader) -> None:
            while line := await stream.readline():
                guest.log.append(line.decode())

        log_tasks.append(asyncio.create_task(keep_log(process.stderr)))
        guest.channel = GuestChannel(await guest.open_stream())
        return guest

    yield start

    for guest in guests:
        with contextlib.suppress(AttributeError):
            await guest.channel.aclose()
        if guest.process.returncode is None:
            guest.process.terminate()
            try:
                async with asyncio.timeout(5):
                    await guest.process.wait()
            except TimeoutError:
                guest.process.kill()
                await guest.process.wait()
    for task in log_tasks:
        task.cancel()
    if AS_ROOT:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def guest(start_guest: GuestFactory) -> Guest:
    return await start_guest()


def alive(pid: int) -> bool:
    """Running or stopped; a zombie or a missing pid counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def eventually(check: Callable[[], bool], within: float) -> None:
    """Poll a condition only the kernel's process table can tell, up to a deadline."""
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.02)


# -- run_code ---------------------------------------------------------------------------------


async def test_state_persists_within_a_context_and_not_across_contexts(guest: Guest) -> None:
    await guest.run("x = 41")
    assert (await guest.run("x + 1"))[0]["value"] == "42"

    await guest.channel.call("context_create", name="other")
    result, _ = await guest.run("x", context="other")
    assert result["error"]["name"] == "NameError"
    listed = await guest.channel.call("context_list")
    assert {c["name"] for c in listed["contexts"]} == {"default", "other"}


async def test_last_expression_value_is_reported_as_repr(guest: Guest) -> None:
    result, _ = await guest.run("a = 6\n'v' * 2 if a else a * 7")
    assert result["value"] == "'vv'"
    assert result["error"] is None
    assert (await guest.run("None"))[0]["value"] is None
    assert (await guest.run("b = 1"))[0]["value"] is None
    assert (await guest.run("__name__"))[0]["value"] == "'__main__'"


async def test_stdout_streams_as_chunks_before_the_result(guest: Guest) -> None:
    code = "import time, sys\nfor i in range(4):\n    print(i)\n    time.sleep(0.05)\nprint('e', file=sys.stderr)"
    messages = [m async for m in guest.channel.request("run_code", code=code)]

    assert messages[-1]["type"] == "result"
    stdout = [m["text"] for m in messages if m["type"] == "stdout"]
    assert len(stdout) >= 3
    assert "".join(stdout) == "0\n1\n2\n3\n"
    assert [m["text"] for m in messages if m["type"] == "stderr"] == ["e\n"]


async def test_exception_returns_error_with_traceback_and_context_survives(guest: Guest) -> None:
    await guest.run("y = 1")
    result, _ = await guest.run("def f():\n    return 1 / 0\nf()")

    error = result["error"]
    assert error["name"] == "ZeroDivisionError"
    assert error["value"] == "division by zero"
    assert "return 1 / 0" in error["traceback"]
    assert "kernel.py" not in error["traceback"]
    assert result["context_restarted"] is False
    assert (await guest.run("y"))[0]["value"] == "1"


async def test_syntax_error_is_an_error_result(guest: Guest) -> None:
    result, _ = await guest.run("def (:")
    assert result["error"]["name"] == "SyntaxError"
    assert "kernel.py" not in result["error"]["traceback"]


async def test_matplotlib_figure_comes_back_as_png(guest: Guest) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
    result, chunks = await guest.run(code, timeout=30)

    assert result["error"] is None, result["error"]
    assert not [c for c in chunks if c["type"] == "stderr"]
    [image] = result["results"]
    assert image["type"] == "image/png"
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG")
    # Shown figures are closed: the next cell returns none.
    assert (await guest.run("1"))[0]["results"] == []


async def test_timeout_kills_and_restarts_the_context_within_a_second(guest: Guest) -> None:
    await guest.run("z = 1")
    started = time.monotonic()
    result, _ = await guest.run("import time\ntime.sleep(60)", timeout=1)

    assert time.monotonic() - started < 2.0
    assert result["context_restarted"] is True
    assert result["error"]["name"] == "TimeoutError"
    assert (await guest.run("z"))[0]["error"]["name"] == "NameError"


async def test_print_flood_is_truncated_at_the_cap_and_ends_by_its_timeout(start_guest: GuestFactory) -> None:
    guest = await start_guest(WARDEN_OUTPUT_LIMIT="10000")
    started = time.monotonic()
    result, chunks = await guest.run("while True:\n    print('x' * 99)", timeout=1)

    assert time.monotonic() - started < 2.5
    assert result["stdout_truncated"] is True
    assert result["context_restarted"] is True
    assert sum(len(c["text"]) for c in chunks) == 10000


async def test_cancel_stops_a_running_execution(guest: Guest) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for message in guest.channel.request(
            "run_code", code="print('go', flush=True)\nimport time\ntime.sleep(60)", timeout=60
        ):
            if message["type"] == "stdout":
                started.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The context was busy for 60 s; now the next cell runs at once, in a fresh kernel.
    async with asyncio.timeout(3):
        result, _ = await guest.run("1 + 1")
    assert result["value"] == "2"


async def test_runs_in_different_contexts_overlap_in_time(guest: Guest) -> None:
    await guest.channel.call("context_create", name="a")
    await guest.channel.call("context_create", name="b")
    code = "import time\nstart = time.time()\ntime.sleep(0.4)\n(start, time.time())"
    (a, _), (b, _) = await asyncio.gather(guest.run(code, context="a"), guest.run(code, context="b"))

    a_start, a_end = eval(a["value"])
    b_start, b_end = eval(b["value"])
    assert a_start < b_end and b_start < a_end


async def test_memory_limit_applies_to_user_code(start_guest: GuestFactory) -> None:
    guest = await start_guest(WARDEN_MEMORY_LIMIT=str(512 * 2**20))
    result, _ = await guest.run("block = bytearray(1 << 30)")
    assert result["error"]["name"] == "MemoryError"
    assert (await guest.run("2 + 2"))[0]["value"] == "4"


# -- commands ---------------------------------------------------------------------------------


async def test_command_reports_exit_code_env_and_cwd(guest: Guest) -> None:
    (guest.workspace / "sub").mkdir()
    result, out = await guest.command('echo "$GREETING"; pwd; exit 3', env={"GREETING": "hi"}, cwd="sub")

    assert result["exit_code"] == 3
    assert result["timed_out"] is False
    assert out == f"hi\n{guest.workspace / 'sub'}\n"
    if AS_ROOT:
        assert (await guest.command("id -u"))[1] == f"{USER_UID}\n"


async def test_command_in_a_missing_cwd_is_a_bad_request(guest: Guest) -> None:
    with pytest.raises(SandboxError) as refused:
        await guest.command("true", cwd="missing")
    assert refused.value.code == "bad_request"
    assert (await guest.command("true"))[0]["exit_code"] == 0


async def test_command_timeout_kills_the_whole_process_tree(guest: Guest) -> None:
    cmd = "echo $$ > pids; sh -c 'echo $$ >> pids; sleep 100' & sleep 100 & echo $! >> pids; wait"
    started = time.monotonic()
    result, _ = await guest.command(cmd, timeout=0.5)

    assert time.monotonic() - started < 2.0
    assert result["timed_out"] is True
    assert result["exit_code"] is None
    pids = [int(p) for p in (guest.workspace / "pids").read_text().split()]
    assert len(pids) == 3
    await eventually(lambda: not any(alive(p) for p in pids), within=3)


async def test_background_command_runs_until_killed(guest: Guest) -> None:
    result, _ = await guest.command("sleep 100", background=True)
    pid = result["pid"]
    assert alive(pid)

    assert (await guest.channel.call("command_kill", pid=pid))["killed"] is True
    await eventually(lambda: gone(pid), within=3)
    assert (await guest.channel.call("command_kill", pid=os.getpid()))["killed"] is False


async def test_orphaned_processes_are_reaped(guest: Guest) -> None:
    # The subshell exits at once; its sleep is orphaned to the supervisor, which must reap it.
    result, _ = await guest.command("(sleep 0.2 & echo $! > orphan)")
    assert result["exit_code"] == 0
    orphan = int((guest.workspace / "orphan").read_text())
    await eventually(lambda: gone(orphan), within=3)


@pytest.mark.skipif(not AS_ROOT, reason="RLIMIT_NPROC counts every process of the user running the tests")
async def test_pids_limit_stops_a_fork_bomb(start_guest: GuestFactory) -> None:
    # As root the supervisor drops user code to uid 1000, which owns nothing else here, so the
    # count is predictable; the loop is bounded anyway and the group is killed at the end.
    guest = await start_guest(WARDEN_PIDS_LIMIT="20")
    code = (
        "import os, time\npids = []\ntry:\n    for _ in range(200):\n        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        pids.append(pid)\n"
        "except OSError as exc:\n    print('stopped', len(pids))\nfinally:\n"
        "    for pid in pids:\n        os.kill(pid, 9)\n        os.waitpid(pid, 0)\n"
    )
    await guest.channel.call("file_write", path="bomb.py", data=base64.b64encode(code.encode()).decode())
    result, out = await guest.command(f"{SYSTEM_PYTHON} bomb.py", timeout=20)

    assert result["exit_code"] == 0
    assert out.startswith("stopped")
    assert int(out.split()[1]) < 20


# -- files ------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_file_write_read_list_remove_roundtrip(guest: Guest) -> None:
    call = guest.channel.call
    binary = bytes(range(256)) * 4

    assert (await call("file_write", path="notes/a.txt", data=b64(b"hello")))["size"] == 5
    assert (await call("file_write", path="notes/a.txt", data=b64(b" world"), append=True))["size"] == 11
    await call("file_write", path=str(guest.workspace / "blob.bin"), data=b64(binary))

    read = await call("file_read", path="notes/a.txt")
    assert base64.b64decode(read["data"]) == b"hello world"
    assert base64.b64decode((await call("file_read", path="blob.bin"))["data"]) == binary

    listing = await call("file_list", path=".", depth=2)
    entries = {e["name"]: e for e in listing["entries"]}
    assert entries["notes"]["type"] == "dir"
    assert entries["a.txt"]["size"] == 11
    assert entries["blob.bin"]["path"] == str(guest.workspace / "blob.bin")

    with pytest.raises(SandboxError) as not_empty:
        await call("file_remove", path="notes")
    assert not_empty.value.code == "is_a_directory"
    assert (await call("file_remove", path="notes", recursive=True))["removed"] is True
    assert (await call("file_remove", path="notes"))["removed"] is False
    with pytest.raises(SandboxError) as missing:
        await call("file_read", path="notes/a.txt")
    assert missing.value.code == "not_found"


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "sub/../../x", "link"])
async def test_paths_outside_the_workspace_are_refused(guest: Guest, path: str) -> None:
    (guest.workspace / "link").symlink_to("/etc/passwd")
    for op, args in (
        ("file_read", {}),
        ("file_write", {"data": b64(b"x")}),
        ("file_list", {}),
    ):
        with pytest.raises(SandboxError) as refused:
            await guest.channel.call(op, path=path, **args)
        assert refused.value.code == "path_outside_workspace", op


async def test_file_read_over_max_bytes_is_too_large(guest: Guest) -> None:
    await guest.channel.call("file_write", path="big", data=b64(b"x" * 100))
    with pytest.raises(SandboxError) as too_large:
        await guest.channel.call("file_read", path="big", max_bytes=99)
    assert too_large.value.code == "too_large"
    with pytest.raises(SandboxError) as directory:
        await guest.channel.call("file_read", path=".")
    assert directory.value.code == "is_a_directory"


@pytest.mark.skipif(not AS_ROOT, reason="needs a file the sandbox user may not read")
async def test_file_ops_run_with_the_users_permissions(guest: Guest) -> None:
    secret = guest.workspace / "root-only"
    secret.write_text("secret")
    secret.chmod(0o600)
    with pytest.raises(SandboxError) as denied:
        await guest.channel.call("file_read", path="root-only")
    assert "Permission denied" in denied.value.message


# -- the protocol -----------------------------------------------------------------------------


async def test_hello_reports_version_and_contexts(guest: Guest) -> None:
    await guest.run("1")
    hello = await guest.channel.call("hello")
    assert hello["version"] == 1
    assert hello["pid"] == guest.process.pid
    assert hello["contexts"] == ["default"]


async def test_unknown_op_and_unknown_context_are_errors(guest: Guest) -> None:
    with pytest.raises(SandboxError) as unknown:
        await guest.channel.call("teleport")
    assert unknown.value.code == "unknown_op"
    with pytest.raises(SandboxError) as missing:
        await guest.run("1", context="nope")
    assert missing.value.code == "no_such_context"


async def test_malformed_line_is_answered_and_the_stream_keeps_working(guest: Guest) -> None:
    stream = await guest.open_stream()
    try:
        stream.writer.write(b"{not json\n")
        async with asyncio.timeout(5):
            rejected = await stream.reader.readline()
            stream.writer.write(b'{"id": 7, "op": "hello"}\n')
            answered = await stream.reader.readline()
    finally:
        await stream.close()
    assert b'"code":"bad_request"' in rejected
    assert b'"id":7,"type":"result"' in answered


async def test_a_broken_stream_fails_pending_requests_with_channel_closed(tmp_path: Path) -> None:
    # A fake guest that takes requests and then hangs up: killing a real supervisor would
    # orphan its kernels to this host's init.
    received = asyncio.Event()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        received.set()
        await reader.readline()
        writer.close()

    server = await asyncio.start_unix_server(hang_up, str(tmp_path / "fake.sock"))
    async with server:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "fake.sock"))
        channel = GuestChannel(ControlStream(reader, writer))
        try:
            pending = [asyncio.create_task(channel.call("run_code", code="1", timeout=30)) for _ in range(2)]
            async with asyncio.timeout(5):
                await received.wait()
                results = await asyncio.gather(*pending, return_exceptions=True)
            assert all(isinstance(r, SandboxError) and r.code == "channel_closed" for r in results)
            assert channel.closed
            with pytest.raises(SandboxError) as later:
                await channel.call("hello")
            assert later.value.code == "channel_closed"
        finally:
            await channel.aclose()


async def test_bridge_relays_the_protocol_over_stdio(guest: Guest) -> None:
    bridge = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(guest_dir() / "bridge.py"),
        guest.socket,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=32 * 2**20,
    )
    assert bridge.stdin is not None and bridge.stdout is not None
    channel = GuestChannel(ControlStream(bridge.stdout, bridge.stdin, bridge))
    try:
        assert (await channel.call("hello"))["version"] == 1
        big = os.urandom(3 * 2**20)  # several pipe- and socket-buffers' worth each way
        await channel.call("file_write", path="big", data=b64(big))
        assert base64.b64decode((await channel.call("file_read", path="big"))["data"]) == big
    finally:
        await channel.aclose()
    # Closing its stdin ends the bridge once the supervisor has closed its side.
    assert bridge.returncode == 0
