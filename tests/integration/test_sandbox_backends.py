"""The sandbox backends on the real thing: gVisor (runsc) and bubblewrap with the real guest
supervisor — lifecycle, pause, checkpoint/restore/fork, listing, and what a sandbox can see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from warden.sandbox import (
    BackendState,
    BwrapBackend,
    ControlStream,
    GVisorBackend,
    SandboxError,
    SandboxSpec,
    build_rootfs,
)
from warden.sandbox.guest import guest_dir

BINARIES = {"gvisor": "runsc", "bwrap": "bwrap"}

if not any(shutil.which(b) for b in BINARIES.values()) and not IN_CI:
    pytest.skip(
        "SKIPPING SANDBOX BACKEND TESTS — neither runsc (gVisor) nor bwrap is installed; "
        "`apt-get install runsc bubblewrap`",
        allow_module_level=True,
    )


def require(kind: str) -> None:
    """Skip loudly outside CI when this backend cannot run here; in CI, let it fail."""
    if IN_CI:
        return
    if not shutil.which(BINARIES[kind]):
        pytest.skip(f"SKIPPING {kind.upper()} TESTS — {BINARIES[kind]} is not installed")
    if kind == "gvisor" and os.geteuid() != 0:
        pytest.skip("SKIPPING GVISOR TESTS — runsc needs root here")


Backend = GVisorBackend | BwrapBackend


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


def make_backend(kind: str, state: Path, rootfs: Path) -> Backend:
    if kind == "gvisor":
        return GVisorBackend(state, rootfs, guest_dir())
    return BwrapBackend(state, guest_dir(), rootfs=rootfs)


@pytest.fixture(params=["gvisor", "bwrap"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, rootfs: Path) -> AsyncIterator[Backend]:
    require(request.param)
    state = tmp_path / "state"
    b = make_backend(request.param, state, rootfs)
    try:
        yield b
    finally:
        await cleanup(b, state)


@pytest.fixture
async def gvisor(tmp_path: Path, rootfs: Path) -> AsyncIterator[GVisorBackend]:
    require("gvisor")
    state = tmp_path / "state"
    b = GVisorBackend(state, rootfs, guest_dir())
    try:
        yield b
    finally:
        await cleanup(b, state)


async def cleanup(b: Backend, state: Path) -> None:
    """Remove every sandbox the test made, even when the test (or destroy itself) failed."""
    with contextlib.suppress(Exception):
        ids = list(await b.list())
        await asyncio.gather(*(b.destroy(i) for i in ids), return_exceptions=True)
    await asyncio.to_thread(force_cleanup, b, state)


def force_cleanup(b: Backend, state: Path) -> None:
    """Below the backend, in case destroy is what broke: only sandboxes under this state dir."""
    if isinstance(b, GVisorBackend):
        root = f"--root={state / 'runsc'}"
        if (state / "runsc").is_dir():
            ids = subprocess.run(
                ["runsc", root, "list", "--quiet"], capture_output=True, text=True
            ).stdout.split()
            for sid in ids:
                subprocess.run(["runsc", root, "resume", sid], capture_output=True)
                subprocess.run(["runsc", root, "kill", sid, "KILL"], capture_output=True)
                subprocess.run(["runsc", root, "delete", "--force", sid], capture_output=True)
    else:
        for pid_file in (state / "bwrap").glob("*/pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            for cg in Path("/sys/fs/cgroup").glob(f"*/warden-bwrap-*-{pid_file.parent.name}"):
                for thaw, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                    with contextlib.suppress(OSError):
                        (cg / thaw).write_text(value)  # a frozen task may not act on SIGKILL
                for pid in (cg / "cgroup.procs").read_text().split() if cg.is_dir() else []:
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    cg.rmdir()


def spec(tmp_path: Path, sandbox_id: str, workspace: str = "ws") -> SandboxSpec:
    return SandboxSpec(sandbox_id=sandbox_id, workspace=tmp_path / workspace)


class Guest:
    """Just enough of docs/sandbox-protocol.md to drive the supervisor from a test."""

    def __init__(self, stream: ControlStream) -> None:
        self.stream = stream
        self.last_id = 0

    async def send(self, op: str, **args: Any) -> int:
        self.last_id += 1
        self.stream.writer.write((json.dumps({"id": self.last_id, "op": op, **args}) + "\n").encode())
        await self.stream.writer.drain()
        return self.last_id

    async def answer(self, request_id: int, timeout: float = 30) -> tuple[dict[str, Any], str]:
        """The final message of a request and everything it printed."""
        printed: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.stream.reader.readline()
                assert line, "the control stream closed"
                msg = json.loads(line)
                if msg.get("id") != request_id:
                    continue
                if msg["type"] in ("stdout", "stderr"):
                    printed.append(msg["text"])
                    continue
                return msg, "".join(printed)

    async def call(self, op: str, **args: Any) -> tuple[dict[str, Any], str]:
        return await self.answer(await self.send(op, **args))

    async def sh(self, cmd: str) -> str:
        result, printed = await self.call("command_run", cmd=cmd, timeout=20)
        assert result["type"] == "result" and result["exit_code"] == 0, (result, printed)
        return printed


@contextlib.asynccontextmanager
async def guest(b: Backend, sandbox_id: str) -> AsyncIterator[Guest]:
    stream = await b.connect(sandbox_id)
    try:
        yield Guest(stream)
    finally:
        await stream.close()


async def hello(b: Backend, sandbox_id: str) -> dict[str, Any]:
    async with guest(b, sandbox_id) as g:
        result, _ = await g.call("hello")
    assert result["type"] == "result" and result["version"] == 1, result
    return result


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


async def test_create_hello_destroy(backend: Backend, tmp_path: Path) -> None:
    await backend.create(spec(tmp_path, "sbx-one"))
    assert await backend.state("sbx-one") is BackendState.RUNNING
    assert (await hello(backend, "sbx-one"))["version"] == 1

    if isinstance(backend, BwrapBackend):
        pid = int((tmp_path / "state" / "bwrap" / "sbx-one" / "pid").read_text().split()[0])
    await backend.destroy("sbx-one")

    assert await backend.state("sbx-one") is BackendState.MISSING
    assert await backend.list() == {}
    if isinstance(backend, GVisorBackend):
        # runsc-sandbox and runsc-gofer carry --root=<state>/runsc on their command lines.
        assert processes_mentioning(str(tmp_path / "state" / "runsc")) == []
        assert not (tmp_path / "state" / "bundles" / "sbx-one").exists()
    else:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(") ")[1][0] == "Z"
        assert not (tmp_path / "state" / "bwrap" / "sbx-one").exists()
        assert not list(Path("/sys/fs/cgroup").glob("*/warden-bwrap-*-sbx-one"))


async def test_pause_resume(backend: Backend, tmp_path: Path) -> None:
    await backend.create(spec(tmp_path, "sbx-pause"))
    async with guest(backend, "sbx-pause") as g:
        await g.call("hello")  # the stream works before the pause

        started = time.monotonic()
        await backend.pause("sbx-pause")
        pause_s = time.monotonic() - started
        assert await backend.state("sbx-pause") is BackendState.PAUSED

        pending = await g.send("hello")
        with pytest.raises(TimeoutError):
            await g.answer(pending, timeout=0.5)  # frozen: nothing answers

        await backend.resume("sbx-pause")
        assert await backend.state("sbx-pause") is BackendState.RUNNING
        result, _ = await g.answer(pending, timeout=10)  # the queued request completes
        assert result["type"] == "result"
    await hello(backend, "sbx-pause")
    assert pause_s < 2

    await backend.pause("sbx-pause")  # destroy must also work on a frozen sandbox
    await backend.destroy("sbx-pause")
    assert await backend.state("sbx-pause") is BackendState.MISSING


async def test_list_shows_every_sandbox(backend: Backend, tmp_path: Path, rootfs: Path) -> None:
    await asyncio.gather(
        backend.create(spec(tmp_path, "sbx-a", "ws-a")), backend.create(spec(tmp_path, "sbx-b", "ws-b"))
    )
    assert await backend.list() == {"sbx-a": BackendState.RUNNING, "sbx-b": BackendState.RUNNING}
    with pytest.raises(SandboxError) as exc:
        await backend.create(spec(tmp_path, "sbx-a", "ws-a"))
    assert exc.value.code == "conflict"
    await backend.destroy("sbx-a")
    assert await backend.list() == {"sbx-b": BackendState.RUNNING}

    # A restarted Warden (a new backend on the same state dir) finds and reaches its sandboxes.
    again = make_backend(backend.name, backend.state_dir, rootfs)
    assert await again.list() == {"sbx-b": BackendState.RUNNING}
    await hello(again, "sbx-b")


async def test_destroy_unknown_is_fine(backend: Backend) -> None:
    await backend.destroy("never-created")
    assert await backend.state("never-created") is BackendState.MISSING
    assert await backend.list() == {}


async def test_sandbox_sees_only_its_mounts(backend: Backend, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    await backend.create(spec(tmp_path, "sbx-iso"))
    async with guest(backend, "sbx-iso") as g:
        out = await g.sh(
            "id -u; hostname; cat /etc/shadow >/dev/null 2>&1 || echo shadow-absent;"
            " test -e /root || echo root-absent;"
            f" test -e {secret} || echo secret-absent;"
            " test -e /etc/ssh || echo ssh-absent;"
            " test -e /etc/ssl/private || echo ssl-private-absent;"
            " touch /usr/x 2>/dev/null || echo usr-readonly;"
            " echo ok > /workspace/mine.txt && echo workspace-writable"
        )
        # No network: only loopback exists, so nothing outside is reachable.
        net, _ = await g.call(
            "run_code",
            code="import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n"
            "    outcome = 'connected'\nexcept OSError:\n    outcome = 'refused'\noutcome",
        )
    lines = out.split()
    assert lines[:2] == ["1000", "sandbox"], out
    for word in (
        "shadow-absent",
        "root-absent",
        "secret-absent",
        "ssh-absent",
        "ssl-private-absent",
        "usr-readonly",
        "workspace-writable",
    ):
        assert word in lines, out
    assert net["value"] == "'refused'", net
    assert (tmp_path / "ws" / "mine.txt").read_text() == "ok\n"


async def test_checkpoint_restore_keeps_memory_and_files(gvisor: GVisorBackend, tmp_path: Path) -> None:
    await gvisor.create(spec(tmp_path, "sbx-orig"))
    async with guest(gvisor, "sbx-orig") as g:
        assert (await g.call("run_code", code="x = 41"))[0]["error"] is None
        await g.sh("echo before > /workspace/note.txt")

    image = tmp_path / "image"
    await gvisor.checkpoint("sbx-orig", image)
    await gvisor.destroy("sbx-orig")

    await gvisor.restore(spec(tmp_path, "sbx-restored"), image)
    async with guest(gvisor, "sbx-restored") as g:
        result, _ = await g.call("run_code", code="x + 1")
        assert result["value"] == "42", result  # the kernel's memory came back
        assert await g.sh("cat /workspace/note.txt") == "before\n"


async def test_fork_restores_one_image_twice(gvisor: GVisorBackend, tmp_path: Path) -> None:
    await gvisor.create(spec(tmp_path, "sbx-parent"))
    async with guest(gvisor, "sbx-parent") as g:
        await g.call("run_code", code="x = 41")
    image = tmp_path / "image"
    await gvisor.checkpoint("sbx-parent", image)
    await gvisor.destroy("sbx-parent")
    # Each child gets its own copy of the workspace, as the manager does for a fork (copytree
    # keeps modes, not owners: give it back to the sandbox user).
    shutil.copytree(tmp_path / "ws", tmp_path / "ws-2", symlinks=True)
    for path in [tmp_path / "ws-2", *(tmp_path / "ws-2").rglob("*")]:
        os.chown(path, 1000, 1000, follow_symlinks=False)

    await asyncio.gather(
        gvisor.restore(spec(tmp_path, "sbx-child-1", "ws"), image),
        gvisor.restore(spec(tmp_path, "sbx-child-2", "ws-2"), image),
    )
    assert await gvisor.list() == {"sbx-child-1": BackendState.RUNNING, "sbx-child-2": BackendState.RUNNING}
    for child, n in (("sbx-child-1", 1), ("sbx-child-2", 2)):
        async with guest(gvisor, child) as g:
            result, _ = await g.call("run_code", code=f"x += {n}; x")
            assert result["value"] == str(41 + n), result  # each child has its own memory
            await g.sh(f"echo {child} > /workspace/who.txt")
    assert (tmp_path / "ws" / "who.txt").read_text() == "sbx-child-1\n"
    assert (tmp_path / "ws-2" / "who.txt").read_text() == "sbx-child-2\n"


async def test_bwrap_has_no_snapshots(tmp_path: Path, rootfs: Path) -> None:
    b = BwrapBackend(tmp_path / "state", guest_dir(), rootfs=rootfs)
    assert b.supports_snapshots is False
    with pytest.raises(SandboxError) as exc:
        await b.checkpoint("anything", tmp_path / "image")
    assert exc.value.code == "not_supported"
    with pytest.raises(SandboxError) as exc:
        await b.restore(spec(tmp_path, "anything"), tmp_path / "image")
    assert exc.value.code == "not_supported"
