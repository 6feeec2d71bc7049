"""The gVisor backend: each sandbox is a `runsc` container with the guest supervisor as PID 1,
reached through `runsc exec … bridge.py`; pause, checkpoint, restore and fork are runsc's."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import IO, Any

from warden.sandbox.backend import BackendState, ControlStream, SandboxError
from warden.sandbox.spec import EGRESS_PROXY_PORT, SandboxSpec

log = logging.getLogger("warden.sandbox.gvisor")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STREAM_LIMIT = 32 * 1024 * 1024
"""Read buffer of a control stream: protocol lines may be up to 16 MiB."""

SUPERVISOR = ("/usr/bin/python3", "-u", "/opt/warden/sandboxd.py")
BRIDGE = ("/usr/bin/python3", "/opt/warden/bridge.py")

# What the supervisor (root inside the sandbox) needs: drop to the user (setuid/setgid), kill
# its process groups (kill), hand files to it and manage the workspace whatever the modes
# (chown/dac_override/fowner). Nothing else: user code runs with none of them.
CAPABILITIES = (
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_KILL",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
)
# Docker's defaults; gVisor implements its own /proc and /sys, so these are belt and braces.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

NOFILE = 4096
CPU_PERIOD = 100_000
PIDS_HOST_BASE = 512
PIDS_HOST_PER_PROCESS = 32
"""The host pids cgroup counts the sentry's and gofer's own threads (about 60 idle), and on the
ptrace platform every guest process adds a stub with its own host threads: measured 15-30 host
tasks per guest process (guest threads are cheap). So the host limit cannot express the guest
one; it is a backstop sized to stay above `limits.pids` guest processes (hitting it kills the
whole sandbox, not the host). User code is held to `limits.pids` by the supervisor's
RLIMIT_NPROC, which gVisor enforces."""
MEMORY_USER_SHARE = 0.9
"""User processes get this share of the sandbox's memory (the supervisor sets RLIMIT_AS)."""

CALL_TIMEOUT = 30.0
START_TIMEOUT = 30.0
HELLO_TIMEOUT = 5.0


def supervisor_env(spec: SandboxSpec) -> dict[str, str]:
    """The supervisor's environment: its limits, and the user's variables passed through as
    JSON so they reach user code only, never the supervisor's own environment."""
    limits = spec.limits
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",  # the supervisor's own; user code gets HOME=/workspace from it
        "PYTHONDONTWRITEBYTECODE": "1",
        "WARDEN_UID": str(spec.user_uid),
        "WARDEN_GID": str(spec.user_gid),
        "WARDEN_OUTPUT_LIMIT": str(limits.output_bytes),
        "WARDEN_MEMORY_LIMIT": str(int(limits.memory_mb * MEMORY_USER_SHARE) * 1024 * 1024),
        "WARDEN_PIDS_LIMIT": str(limits.pids),
        "WARDEN_FSIZE_LIMIT": str(limits.disk_mb * 1024 * 1024),
        "WARDEN_DEFAULT_TIMEOUT": str(limits.timeout),
        "WARDEN_USER_ENV": json.dumps(spec.env, sort_keys=True),
        "WARDEN_EGRESS_PORT": str(EGRESS_PROXY_PORT if spec.network.egress else 0),
    }


def oci_config(spec: SandboxSpec, rootfs: Path, guest: Path) -> dict[str, Any]:
    """The OCI runtime config of one sandbox. Checkpoint images restore only into a config
    with the same mounts in the same order, so everything here derives from the spec alone."""
    limits = spec.limits
    caps = list(CAPABILITIES)
    tmpfs_opts = ["nosuid", "nodev"]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(SUPERVISOR),
            "env": [f"{k}={v}" for k, v in (supervisor_env(spec) | {"WARDEN_BACKEND": "gvisor"}).items()],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nodev"]},
            {"destination": "/opt/warden", "type": "bind", "source": str(guest), "options": ["rbind", "ro"]},
            {
                "destination": "/workspace",
                "type": "bind",
                "source": str(spec.workspace),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [*tmpfs_opts, "mode=1777"],
            },
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": [*tmpfs_opts, "mode=755"]},
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [*tmpfs_opts, "noexec", "mode=1777"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "resources": {
                "memory": {"limit": limits.memory_mb * 1024 * 1024},
                "cpu": {"quota": max(1000, int(limits.cpus * CPU_PERIOD)), "period": CPU_PERIOD},
                "pids": {"limit": PIDS_HOST_BASE + limits.pids * PIDS_HOST_PER_PROCESS},
            },
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def ensure_workspace(spec: SandboxSpec) -> None:
    """Create the workspace if the caller has not (the manager normally has, with its quota);
    one made here belongs to the sandbox user, as user code must write to it."""
    if spec.workspace.is_dir():
        return
    spec.workspace.mkdir(parents=True, mode=0o755)
    if os.geteuid() == 0:
        os.chown(spec.workspace, spec.user_uid, spec.user_gid)


def check_id(sandbox_id: str) -> str:
    if not _ID.match(sandbox_id):
        raise SandboxError(f"invalid sandbox id {sandbox_id!r}", code="invalid_id")
    return sandbox_id


ENDPOINTS = frozenset({"control", "egress"})
"""The guest's sockets in /run/warden a host may connect to."""


def check_endpoint(endpoint: str) -> str:
    if endpoint not in ENDPOINTS:
        raise SandboxError(f"unknown sandbox endpoint {endpoint!r}", code="invalid_endpoint")
    return endpoint


_STATES = {
    "running": BackendState.RUNNING,
    "paused": BackendState.PAUSED,
    "created": BackendState.STOPPED,
    "stopped": BackendState.STOPPED,
}


class GVisorBackend:
    """Sandboxes as runsc containers under one private ``--root``, so `list` sees only ours."""

    name = "gvisor"
    supports_snapshots = True

    def __init__(
        self,
        state_dir: Path,
        rootfs: Path,
        guest: Path,
        runsc: str = "runsc",
        platform: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.rootfs = rootfs
        self.guest = guest
        self.runsc = runsc
        self.platform = platform
        self._root = state_dir / "runsc"
        self._bundles = state_dir / "bundles"
        # runsc names each sandbox's control socket (abstract, "@runsc-sandbox.<id>") and its
        # cgroups ("/<id>") after the container id alone, whatever --root says: two Wardens, a
        # test run, or Docker with runsc would collide on a bare "sbx-1". The prefix is stable
        # for a state dir, so a restarted Warden finds its sandboxes again.
        digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:10]
        self._prefix = f"warden-{digest}-"

    # -- runsc plumbing -------------------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        # --cpu-num-from-quota: the guest sees as many CPUs as its quota (at least 2), so numpy
        # and friends do not start a thread per host core (costly on the ptrace platform).
        flags = [f"--root={self._root}", "--network=none", "--cpu-num-from-quota"]
        if self.platform:
            flags.append(f"--platform={self.platform}")
        return [self.runsc, *flags, *args]

    async def _run(
        self, *args: str, timeout: float = CALL_TIMEOUT, check: bool = True, log_to: Path | None = None
    ) -> tuple[int, str, str]:
        """One runsc call with a deadline; returns (exit code, stdout, stderr).

        With ``log_to``, output goes to that file instead of pipes: `run`/`restore --detach`
        leave the sandbox holding their stdio, so a pipe would never reach end of file."""
        argv = self._argv(*args)
        log_file: IO[bytes] | None = None
        try:
            if log_to is not None:
                log_file = await asyncio.to_thread(open, log_to, "ab")
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file or asyncio.subprocess.PIPE,
                stderr=log_file or asyncio.subprocess.PIPE,
                # The sandbox must outlive Warden and ignore signals sent to Warden's group.
                start_new_session=True,
            )
        except OSError as exc:
            if log_file is not None:
                log_file.close()
            raise SandboxError(f"cannot run {self.runsc}: {exc}", code="backend_unavailable") from exc
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SandboxError(f"runsc {args[0]} timed out after {timeout:.0f}s", code="timeout") from None
        finally:
            if log_file is not None:
                log_file.close()
        rc = proc.returncode if proc.returncode is not None else -1
        stdout = (out or b"").decode(errors="replace")
        stderr = (err or b"").decode(errors="replace")
        if log_to is not None and rc != 0:
            stderr = await asyncio.to_thread(_tail, log_to)
        if check and rc != 0:
            raise SandboxError(
                f"runsc {args[0]} failed (exit {rc}): {stderr.strip()[-2000:]}",
                details={"command": argv, "exit_code": rc},
            )
        return rc, stdout, stderr

    def _cid(self, sandbox_id: str) -> str:
        """The runsc container id of a sandbox."""
        return self._prefix + check_id(sandbox_id)

    def _bundle(self, sandbox_id: str) -> Path:
        return self._bundles / check_id(sandbox_id)

    async def _write_bundle(self, spec: SandboxSpec) -> Path:
        bundle = self._bundle(spec.sandbox_id)
        config = json.dumps(oci_config(spec, self.rootfs, self.guest), indent=2)

        def write() -> None:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if bundle.exists():
                shutil.rmtree(bundle)
            bundle.mkdir(parents=True, mode=0o700)
            ensure_workspace(spec)
            (bundle / "config.json").write_text(config)

        await asyncio.to_thread(write)
        return bundle

    async def _start(self, spec: SandboxSpec, *args: str) -> None:
        """`run` or `restore` a bundle, then wait for the supervisor; clean up on failure."""
        sandbox_id = check_id(spec.sandbox_id)
        current = await self.state(sandbox_id)
        if current in (BackendState.RUNNING, BackendState.PAUSED):
            raise SandboxError(f"sandbox {sandbox_id} already exists", code="conflict")
        if current is BackendState.STOPPED:
            await self.destroy(sandbox_id)  # leftovers of a crash or a checkpoint: nothing to keep
        bundle = await self._write_bundle(spec)
        try:
            await self._run(
                *args, "--bundle", str(bundle), "--detach", self._cid(sandbox_id),
                timeout=START_TIMEOUT, log_to=bundle / "sandbox.log",
            )  # fmt: skip
            await self._wait_ready(sandbox_id, START_TIMEOUT)
        except BaseException:
            # Also on cancellation: a half-started sandbox must not outlive the request.
            await asyncio.shield(self.destroy(sandbox_id))
            raise

    async def _wait_ready(self, sandbox_id: str, timeout: float) -> None:
        """Until the supervisor answers `hello` through a bridge (it needs a moment to bind its
        socket after PID 1 starts, and a restored one answers at once)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                await self._hello(sandbox_id, min(HELLO_TIMEOUT, max(0.1, deadline - time.monotonic())))
                return
            except (SandboxError, OSError, TimeoutError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                tail = await asyncio.to_thread(_tail, self._bundle(sandbox_id) / "sandbox.log")
                raise SandboxError(
                    f"sandbox {sandbox_id} did not answer within {timeout:.0f}s: {last}; log: {tail[-1500:]}",
                    code="start_failed",
                )
            if await self.state(sandbox_id) not in (BackendState.RUNNING, BackendState.PAUSED):
                tail = await asyncio.to_thread(_tail, self._bundle(sandbox_id) / "sandbox.log")
                raise SandboxError(
                    f"sandbox {sandbox_id} exited while starting: {tail[-1500:]}", code="start_failed"
                )
            await asyncio.sleep(0.05)

    async def _hello(self, sandbox_id: str, timeout: float) -> None:
        stream = await self.connect(sandbox_id)
        try:
            async with asyncio.timeout(timeout):
                stream.writer.write(b'{"id": 0, "op": "hello"}\n')
                await stream.writer.drain()
                line = await stream.reader.readline()
            if not line:
                raise SandboxError("bridge closed without an answer")
            reply = json.loads(line)
            if reply.get("type") != "result":
                raise SandboxError(f"unexpected hello answer: {line[:200]!r}")
        finally:
            # No kill here: a bridge that could not connect has exited, and killing it races
            # asyncio's child watcher (Popen.kill polls, reaping the pid under the watcher).
            # close() ends stdin, waits, and kills only what is still running after 2 s.
            await stream.close()

    # -- SandboxBackend -------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> None:
        await self._start(spec, "run")

    async def connect(self, sandbox_id: str, endpoint: str = "control") -> ControlStream:
        socket = f"/run/warden/{check_endpoint(endpoint)}.sock"
        bundle = self._bundle(sandbox_id)
        log_file = await asyncio.to_thread(_open_log, bundle / "bridge.log")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv("exec", self._cid(sandbox_id), *BRIDGE, socket),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                # Bridge and runsc errors go to a file: an unread stderr pipe could fill and block.
                stderr=log_file if log_file is not None else asyncio.subprocess.DEVNULL,
                limit=STREAM_LIMIT,
            )
        except OSError as exc:
            raise SandboxError(f"cannot run {self.runsc}: {exc}", code="backend_unavailable") from exc
        finally:
            if log_file is not None:
                log_file.close()
        assert proc.stdin is not None and proc.stdout is not None
        return ControlStream(reader=proc.stdout, writer=proc.stdin, process=proc)

    async def pause(self, sandbox_id: str) -> None:
        await self._run("pause", self._cid(sandbox_id))

    async def resume(self, sandbox_id: str) -> None:
        await self._run("resume", self._cid(sandbox_id))

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        await asyncio.to_thread(image_dir.mkdir, parents=True, exist_ok=True)
        await self._run("checkpoint", f"--image-path={image_dir}", self._cid(sandbox_id), timeout=120)

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        if not await asyncio.to_thread((image_dir / "checkpoint.img").is_file):
            raise SandboxError(f"no checkpoint image in {image_dir}", code="not_found")
        await self._start(spec, "restore", f"--image-path={image_dir}")

    async def destroy(self, sandbox_id: str) -> None:
        bundle = self._bundle(sandbox_id)
        current = await self.state(sandbox_id)
        if current is not BackendState.MISSING:
            if current is BackendState.PAUSED:
                # This runsc panics on `delete --force` of a paused sandbox ("invalid state
                # transition: paused => stopped"), and a paused sentry cannot act on the kill.
                await self._run("resume", self._cid(sandbox_id), check=False)
            await self._run("kill", self._cid(sandbox_id), "KILL", check=False)
            rc, _, err = await self._run("delete", "--force", self._cid(sandbox_id), check=False)
            if rc != 0 and await self.state(sandbox_id) is not BackendState.MISSING:
                raise SandboxError(f"runsc delete {sandbox_id} failed: {err.strip()[-2000:]}")
        await asyncio.to_thread(shutil.rmtree, bundle, True)

    async def state(self, sandbox_id: str) -> BackendState:
        rc, out, err = await self._run("state", self._cid(sandbox_id), check=False)
        if rc != 0:
            if "does not exist" in err or "not found" in err.lower():
                return BackendState.MISSING
            raise SandboxError(f"runsc state {sandbox_id} failed: {err.strip()[-2000:]}")
        try:
            status = str(json.loads(out).get("status", ""))
        except ValueError as exc:
            raise SandboxError(f"runsc state {sandbox_id}: unreadable answer {out[:200]!r}") from exc
        return _STATES.get(status, BackendState.STOPPED)

    async def list(self) -> dict[str, BackendState]:
        if not await asyncio.to_thread(self._root.is_dir):
            return {}
        _, out, _ = await self._run("list", "--format=json")
        try:
            entries = json.loads(out or "[]") or []
        except ValueError as exc:
            raise SandboxError(f"runsc list: unreadable answer {out[:200]!r}") from exc
        return {
            str(e["id"]).removeprefix(self._prefix): _STATES.get(
                str(e.get("status", "")), BackendState.STOPPED
            )
            for e in entries
            if str(e["id"]).startswith(self._prefix)
        }


def _open_log(path: Path) -> IO[bytes] | None:
    try:
        return open(path, "ab")
    except OSError:
        return None


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


__all__ = ["GVisorBackend", "oci_config", "supervisor_env"]
