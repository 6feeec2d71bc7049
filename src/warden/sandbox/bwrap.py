"""The bubblewrap backend, for hosts without gVisor: namespaces, a seccomp filter and cgroup limits
around the same supervisor. Weaker: user code talks to the host kernel directly."""

# Why weaker than gVisor: bubblewrap only arranges Linux namespaces (mount, pid, net, ipc, uts,
# user), so every system call of user code reaches the host kernel, and one kernel bug is a way
# out. The seccomp filter below removes the riskiest calls, not the class of problem. The sandbox
# user (uid 1000 inside) is the same uid on the host when Warden runs as root, else Warden's own
# uid, never with capabilities. No memory snapshots (checkpoint/restore/fork are gVisor's), so
# hibernation keeps files only.

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warden.sandbox.backend import BackendState, ControlStream, SandboxError
from warden.sandbox.gvisor import (
    STREAM_LIMIT,
    SUPERVISOR,
    check_endpoint,
    check_id,
    ensure_workspace,
    supervisor_env,
)
from warden.sandbox.rootfs import build_rootfs
from warden.sandbox.spec import ResourceLimits, SandboxSpec

log = logging.getLogger("warden.sandbox.bwrap")

START_TIMEOUT = 20.0
HELLO_TIMEOUT = 5.0
NOFILE = 4096
PIDS_HEADROOM = 32
"""bwrap's two processes and the supervisor's threads, on top of what user code may have."""
CPU_PERIOD = 100_000
CGROUP_ROOT = Path("/sys/fs/cgroup")
STAGE = Path("/run/warden-bwrap")
"""Mount point of each launcher's private staging tmpfs (see LAUNCHER); empty on the host."""

# Runs as `python -I -S -c LAUNCHER` with a JSON config on stdin. It forks a child that leaves
# Warden's session, joins the sandbox's cgroups (before bwrap forks, so everything inside is
# counted) and sets rlimits. When Warden is root the child then drops to the sandbox user's host
# uid; since that user may not be able to reach the folders to mount (bwrap resolves them by
# path, and a state dir under /root is closed to it), the child first binds them onto a tmpfs at
# `stage` in a private mount namespace of its own. It execs bwrap with its options in a memfd:
# `--setenv` values (the user's environment may hold secrets) never appear in `ps`. It records
# its pid (with its start time, against pid reuse) before exec, so a Warden crash right then
# leaves no unknown sandbox. The parent reports the pid, or why exec failed, and exits: bwrap is
# then nobody's child in Warden and outlives it.
LAUNCHER = r"""
import json, os, resource, sys
c = json.loads(sys.stdin.buffer.read())
r, w = os.pipe2(os.O_CLOEXEC)
pid = os.fork()
if pid == 0:
    try:
        os.close(r)
        os.setsid()
        for procs in c["cgroups"]:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        for name, value in c["rlimits"]:
            resource.setrlimit(getattr(resource, name), (value, value))
        if c["stage"]:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def check(ret, what):
                if ret != 0:
                    raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")
            check(libc.unshare(0x20000), "unshare(CLONE_NEWNS)")
            # MS_REC|MS_PRIVATE: nothing mounted here shows on the host, and the other way round.
            check(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")
            # MS_NOSUID|MS_NODEV
            check(libc.mount(b"tmpfs", c["stage"].encode(), b"tmpfs", 2 | 4, b"mode=0755"), "stage tmpfs")
            for name, source in c["binds"].items():
                target = os.path.join(c["stage"], name)
                os.mkdir(target)
                # MS_BIND|MS_REC: keeps mounts below the source (a workspace volume, say).
                check(libc.mount(source.encode(), target.encode(), None, 0x1000 | 0x4000, None), f"bind {source}")
        null = os.open("/dev/null", os.O_RDONLY)
        out = os.open(c["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        args = c["args"]
        if c["seccomp"]:
            fd = os.open(c["seccomp"], os.O_RDONLY)
            os.set_inheritable(fd, True)
            args = [str(fd) if a == "@seccomp@" else a for a in args]
        mem = os.memfd_create("bwrap-args", 0)
        os.write(mem, b"".join(a.encode() + b"\0" for a in args))
        os.lseek(mem, 0, os.SEEK_SET)
        with open("/proc/self/stat") as f:
            stat = f.read()
        start = stat[stat.rindex(")") + 2 :].split()[19]
        with open(c["pidfile"] + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {start}\n")
        os.rename(c["pidfile"] + ".tmp", c["pidfile"])
        if c["uid"] is not None:
            os.setgroups([])
            os.setgid(c["gid"])
            os.setuid(c["uid"])
        os.execv(c["bwrap"], [c["bwrap"], "--args", str(mem), "--", *c["command"]])
    except BaseException as exc:
        os.write(w, f"{type(exc).__name__}: {exc}".encode())
    os._exit(127)
os.close(w)
err = b""
while chunk := os.read(r, 4096):
    err += chunk
if err:
    os.waitpid(pid, 0)
    sys.stderr.write(err.decode(errors="replace"))
    sys.exit(1)
print(pid)
"""

# -- seccomp -------------------------------------------------------------------------------

# x86_64 numbers of calls user code has no business making: kernel modules and kexec, mounts
# and namespaces, tracing other processes, keyrings, bpf/perf/io_uring/userfaultfd (frequent
# sources of kernel exploits), clocks, swap, reboot. They fail with EPERM.
_DENIED_X86_64 = {
    "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305, "clock_settime": 227,
    "create_module": 174, "delete_module": 176, "fanotify_init": 300, "finit_module": 313,
    "fsconfig": 431, "fsmount": 432, "fsopen": 430, "fspick": 433, "get_kernel_syms": 177,
    "init_module": 175, "io_uring_enter": 426, "io_uring_register": 427, "io_uring_setup": 425,
    "ioperm": 173, "iopl": 172, "kcmp": 312, "kexec_file_load": 320, "kexec_load": 246,
    "keyctl": 250, "lookup_dcookie": 212, "mount": 165, "mount_setattr": 442, "move_mount": 429,
    "name_to_handle_at": 303, "nfsservctl": 180, "open_by_handle_at": 304, "open_tree": 428,
    "perf_event_open": 298, "pivot_root": 155, "process_vm_readv": 310, "process_vm_writev": 311,
    "ptrace": 101, "query_module": 178, "quotactl": 179, "quotactl_fd": 443, "reboot": 169,
    "request_key": 249, "setns": 308, "settimeofday": 164, "swapoff": 168, "swapon": 167,
    "_sysctl": 156, "sysfs": 139, "syslog": 103, "umount2": 166, "uselib": 134, "userfaultfd": 323,
    "ustat": 136, "vhangup": 153,
}  # fmt: skip
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_ALLOW = 0x7FFF0000
# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
_LD_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06


def seccomp_filter() -> bytes | None:
    """A seccomp-bpf program (struct sock_filter[]) for bwrap's ``--seccomp``, built with the
    standard library only; None on architectures it does not cover (the sandbox then runs
    without one, which the module docstring's caveats already assume)."""
    if platform.machine() != "x86_64":
        return None

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("<HBBI", code, jt, jf, k)

    denied = sorted(set(_DENIED_X86_64.values()))
    deny_at = 5 + len(denied) + 1  # index of the final "return EPERM"
    prog = [
        op(_LD_ABS, 4),  # seccomp_data.arch
        op(_JEQ, _AUDIT_ARCH_X86_64, jt=1),
        op(_RET, _SECCOMP_RET_KILL_PROCESS),  # another ABI (i386) could dodge the numbers below
        op(_LD_ABS, 0),  # seccomp_data.nr
        op(_JGE, _X32_SYSCALL_BIT, jt=deny_at - 4 - 1),  # the x32 ABI, same reason
    ]
    for nr in denied:
        prog.append(op(_JEQ, nr, jt=deny_at - len(prog) - 1))
    prog.append(op(_RET, _SECCOMP_RET_ALLOW))
    prog.append(op(_RET, _SECCOMP_RET_ERRNO | errno.EPERM))
    return b"".join(prog)


# -- cgroups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cgroup:
    """The sandbox's cgroup: v2 (one directory) or v1 (one per controller). Limits memory, pids
    and CPU, freezes for pause, and finds every process for destroy."""

    version: int
    dirs: tuple[Path, ...]
    freezer: Path

    @classmethod
    def locate(cls, name: str, root: Path = CGROUP_ROOT) -> _Cgroup | None:
        if (root / "cgroup.controllers").is_file():
            return cls(2, (root / name,), root / name)
        if (root / "freezer").is_dir():
            dirs = tuple(root / c / name for c in ("memory", "pids", "cpu", "freezer") if (root / c).is_dir())
            return cls(1, dirs, root / "freezer" / name)
        return None

    def exists(self) -> bool:
        return self.freezer.is_dir()

    def create(self, limits: ResourceLimits) -> None:
        if self.version == 2:
            # Controllers must be enabled in the parent for the files below to exist.
            with contextlib.suppress(OSError):
                (self.freezer.parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        for d in self.dirs:
            d.mkdir(exist_ok=True)
        memory = str(limits.memory_mb * 1024 * 1024)
        pids = str(limits.pids + PIDS_HEADROOM)
        quota = max(1000, int(limits.cpus * CPU_PERIOD))
        if self.version == 2:
            d = self.dirs[0]
            self._write(d / "memory.max", memory)
            self._write(d / "memory.swap.max", "0", required=False)
            self._write(d / "pids.max", pids)
            self._write(d / "cpu.max", f"{quota} {CPU_PERIOD}")
            return
        for d in self.dirs:
            controller = d.parent.name
            if controller == "memory":
                self._write(d / "memory.limit_in_bytes", memory)
            elif controller == "pids":
                self._write(d / "pids.max", pids)
            elif controller == "cpu":
                self._write(d / "cpu.cfs_period_us", str(CPU_PERIOD))
                self._write(d / "cpu.cfs_quota_us", str(quota))

    @staticmethod
    def _write(path: Path, value: str, required: bool = True) -> None:
        try:
            path.write_text(value)
        except OSError:
            if required:
                raise

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        try:
            return {int(p) for p in (self.freezer / "cgroup.procs").read_text().split()}
        except OSError:
            return set()

    def freeze(self, frozen: bool) -> None:
        if self.version == 2:
            (self.freezer / "cgroup.freeze").write_text("1" if frozen else "0")
        else:
            (self.freezer / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
        deadline = time.monotonic() + 5
        while not self._frozen_is(frozen):
            if time.monotonic() > deadline:
                raise SandboxError(f"cgroup {self.freezer.name} did not {'freeze' if frozen else 'thaw'}")
            if self.version == 1 and frozen:
                # v1 can stay FREEZING while a task is in an uninterruptible sleep: ask again.
                (self.freezer / "freezer.state").write_text("FROZEN")
            time.sleep(0.005)

    def _frozen_is(self, frozen: bool) -> bool:
        if self.version == 2:
            return f"frozen {int(frozen)}" in (self.freezer / "cgroup.events").read_text()
        return (self.freezer / "freezer.state").read_text().strip() == ("FROZEN" if frozen else "THAWED")

    def kill_all(self) -> None:
        """SIGKILL everything in the cgroup: frozen first so nothing forks meanwhile, thawed
        after so the signals are acted on."""
        if self.version == 2 and (self.freezer / "cgroup.kill").exists():
            (self.freezer / "cgroup.kill").write_text("1")
            return
        with contextlib.suppress(OSError, SandboxError):
            self.freeze(True)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError, SandboxError):
            self.freeze(False)

    def remove(self) -> None:
        deadline = time.monotonic() + 5
        for d in self.dirs:
            while d.exists():
                try:
                    d.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    # EBUSY until the last killed process has left.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


# -- processes -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    # Zombies are dead (they wait for whoever reaps orphans); a reused pid has another start.
    return st is not None and st[0] not in ("Z", "X") and st[2] == start


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (a snapshot of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry.name))
    found, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_tree(root: int, sig: int) -> None:
    """Signal a process tree until no new members appear (a fork may race the first walk)."""
    done: set[int] = set()
    for _ in range(10):
        fresh = [p for p in _tree(root) if p not in done]
        if not fresh:
            return
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        done.update(fresh)


# -- the backend -----------------------------------------------------------------------------


class BwrapBackend:
    """Sandboxes as detached `bwrap` process trees; the host reaches each supervisor through
    the socket in a per-sandbox directory bound at /run/warden."""

    name = "bwrap"
    supports_snapshots = False

    def __init__(
        self,
        state_dir: Path,
        guest: Path,
        rootfs: Path | None = None,
        bwrap: str = "bwrap",
        use_cgroups: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.guest = guest
        self.bwrap = bwrap
        self.use_cgroups = use_cgroups
        self._rootfs = rootfs
        self._dirs = state_dir / "bwrap"
        # cgroups are host-wide: name them after the state dir too, so that two Wardens (or a
        # test run) never share one.
        digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:10]
        self._cgroup_prefix = f"warden-bwrap-{digest}-"

    def _dir(self, sandbox_id: str) -> Path:
        return self._dirs / check_id(sandbox_id)

    def _cgroup(self, sandbox_id: str) -> _Cgroup | None:
        return _Cgroup.locate(self._cgroup_prefix + check_id(sandbox_id)) if self.use_cgroups else None

    async def _rootfs_dir(self) -> Path:
        if self._rootfs is None:
            self._rootfs = await asyncio.to_thread(build_rootfs, self.state_dir / "rootfs")
        return self._rootfs

    def _binds(self, spec: SandboxSpec, rootfs: Path, home: Path) -> dict[str, str]:
        """The host folders a sandbox mounts, by name (their name under the staging tmpfs)."""
        return {
            "etc": str(rootfs / "etc"),
            "var": str(rootfs / "var"),
            "guest": str(self.guest),
            "workspace": str(spec.workspace),
            "run": str(home / "run"),
        }

    def _args(self, spec: SandboxSpec, rootfs: Path, sources: dict[str, str], seccomp: bool) -> list[str]:
        """bwrap's options (the command comes apart); ``sources`` maps `_binds` names to the
        paths bwrap mounts from."""
        args = [
            "--unshare-all",  # user, pid, net (no network at all), ipc, uts, cgroup
            "--unshare-user",  # not just "try": --disable-userns and --uid need it
            "--disable-userns",
            "--new-session",  # no TIOCSTI into a terminal Warden might have
            "--cap-drop", "ALL",
            "--uid", str(spec.user_uid),
            "--gid", str(spec.user_gid),
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for link in sorted(rootfs.iterdir()):
            if link.is_symlink():
                args += ["--symlink", os.readlink(link), f"/{link.name}"]
        args += [
            "--ro-bind", sources["etc"], "/etc",
            "--ro-bind", sources["var"], "/var",
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "1777", "--tmpfs", "/tmp",
            "--perms", "1777", "--tmpfs", "/dev/shm",
            "--ro-bind", sources["guest"], "/opt/warden",
            "--bind", sources["workspace"], "/workspace",
            "--bind", sources["run"], "/run/warden",
            "--remount-ro", "/",
            "--chdir", "/",
            "--clearenv",
        ]  # fmt: skip
        env = supervisor_env(spec) | {"WARDEN_BACKEND": "bwrap"}
        for key, value in env.items():
            args += ["--setenv", key, value]
        if seccomp:
            args += ["--seccomp", "@seccomp@"]  # the launcher puts the descriptor's number here
        return args

    # -- SandboxBackend -------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> None:
        sandbox_id = check_id(spec.sandbox_id)
        current = await self.state(sandbox_id)
        if current in (BackendState.RUNNING, BackendState.PAUSED):
            raise SandboxError(f"sandbox {sandbox_id} already exists", code="conflict")
        if current is BackendState.STOPPED:
            await self.destroy(sandbox_id)  # leftovers of a crash: same id, nothing to keep
        bwrap = shutil.which(self.bwrap)
        if bwrap is None:
            raise SandboxError(f"{self.bwrap} is not installed", code="backend_unavailable")
        rootfs = await self._rootfs_dir()
        home = self._dir(sandbox_id)
        run_dir = home / "run"
        cgroup = self._cgroup(sandbox_id)
        bpf = seccomp_filter()
        # As root, the sandbox runs as the user's own host uid, not as root without capabilities:
        # files it creates get the owner gVisor sandboxes give them, and an escape lands on an
        # unprivileged account.
        drop = os.geteuid() == 0
        binds = self._binds(spec, rootfs, home)
        sources = {name: str(STAGE / name) for name in binds} if drop else binds

        def prepare() -> _Cgroup | None:
            if home.exists():
                shutil.rmtree(home)
            run_dir.mkdir(parents=True, mode=0o700)
            if drop:
                # The supervisor creates its socket here (host root still reaches it).
                os.chown(run_dir, spec.user_uid, spec.user_gid)
                STAGE.mkdir(mode=0o755, parents=True, exist_ok=True)  # only a mount point
            ensure_workspace(spec)
            if bpf is not None:
                (home / "seccomp.bpf").write_bytes(bpf)
            if cgroup is None:
                return None
            try:
                cgroup.create(spec.limits)
            except OSError as exc:
                log.warning("sandbox %s runs without cgroup limits: %s", sandbox_id, exc)
                with contextlib.suppress(OSError):
                    cgroup.remove()
                return None
            return cgroup

        try:
            joined = await asyncio.to_thread(prepare)
            # Options only: bwrap takes the command from its real argv, not from --args.
            args = await asyncio.to_thread(self._args, spec, rootfs, sources, bpf is not None)
            config = {
                "bwrap": bwrap,
                "args": args,
                "command": list(SUPERVISOR),
                "seccomp": str(home / "seccomp.bpf") if bpf is not None else "",
                "stage": str(STAGE) if drop else "",
                "binds": binds,
                "uid": spec.user_uid if drop else None,
                "gid": spec.user_gid if drop else None,
                "cgroups": joined.procs_files() if joined else [],
                # For the supervisor itself; it sets the user's (NPROC, AS, FSIZE...) on user
                # code. No FSIZE here: it would also cap sandbox.log, the supervisor's stderr.
                "rlimits": [["RLIMIT_NOFILE", NOFILE], ["RLIMIT_CORE", 0]],
                "log": str(home / "sandbox.log"),
                "pidfile": str(home / "pid"),
            }
            await self._launch(config)
            await self._wait_ready(sandbox_id)
        except BaseException:
            await asyncio.shield(self.destroy(sandbox_id))
            raise

    async def _launch(self, config: dict[str, Any]) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", LAUNCHER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(START_TIMEOUT):
                out, err = await proc.communicate(json.dumps(config).encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SandboxError("bwrap launcher timed out", code="timeout") from None
        if proc.returncode != 0:
            raise SandboxError(f"cannot start bwrap: {err.decode(errors='replace').strip()[-2000:]}")
        return int(out.decode().strip())

    async def _wait_ready(self, sandbox_id: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while True:
            try:
                stream = await self.connect(sandbox_id)
                try:
                    async with asyncio.timeout(HELLO_TIMEOUT):
                        stream.writer.write(b'{"id": 0, "op": "hello"}\n')
                        await stream.writer.drain()
                        line = await stream.reader.readline()
                    if line and json.loads(line).get("type") == "result":
                        return
                    last = f"unexpected answer {line[:200]!r}"
                finally:
                    await stream.close()
            except (SandboxError, OSError, TimeoutError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if await self.state(sandbox_id) is not BackendState.RUNNING:
                raise SandboxError(
                    f"sandbox {sandbox_id} exited while starting: {await self._log_tail(sandbox_id)}",
                    code="start_failed",
                )
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"sandbox {sandbox_id} did not answer within {START_TIMEOUT:.0f}s: {last}; "
                    f"log: {await self._log_tail(sandbox_id)}",
                    code="start_failed",
                )
            await asyncio.sleep(0.02)

    async def _log_tail(self, sandbox_id: str) -> str:
        def tail() -> str:
            try:
                return (self._dir(sandbox_id) / "sandbox.log").read_bytes()[-1500:].decode(errors="replace")
            except OSError:
                return ""

        return await asyncio.to_thread(tail)

    async def connect(self, sandbox_id: str, endpoint: str = "control") -> ControlStream:
        run_dir = self._dir(sandbox_id) / "run"
        name = f"{check_endpoint(endpoint)}.sock"
        fd: int | None = None
        try:
            path = str(run_dir / name)
            if len(path.encode()) > 100:
                # sun_path holds 108 bytes; reach a deep state dir through an O_PATH descriptor.
                fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY)
                path = f"/proc/self/fd/{fd}/{name}"
            reader, writer = await asyncio.open_unix_connection(path, limit=STREAM_LIMIT)
        except OSError as exc:
            raise SandboxError(f"cannot reach sandbox {sandbox_id}: {exc}", code="unavailable") from exc
        finally:
            if fd is not None:
                os.close(fd)
        return ControlStream(reader=reader, writer=writer)

    async def pause(self, sandbox_id: str) -> None:
        pid = await self._pid(sandbox_id)
        cgroup = self._cgroup(sandbox_id)

        def freeze() -> None:
            if cgroup is not None and cgroup.exists():
                cgroup.freeze(True)
            else:
                _signal_tree(pid, signal.SIGSTOP)
            (self._dir(sandbox_id) / "paused").touch()

        await asyncio.to_thread(freeze)

    async def resume(self, sandbox_id: str) -> None:
        pid = await self._pid(sandbox_id)
        cgroup = self._cgroup(sandbox_id)

        def thaw() -> None:
            if cgroup is not None and cgroup.exists():
                cgroup.freeze(False)
            else:
                _signal_tree(pid, signal.SIGCONT)
            (self._dir(sandbox_id) / "paused").unlink(missing_ok=True)

        await asyncio.to_thread(thaw)

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        raise SandboxError("bubblewrap sandboxes cannot be checkpointed", code="not_supported")

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        raise SandboxError("bubblewrap sandboxes cannot be restored from images", code="not_supported")

    async def destroy(self, sandbox_id: str) -> None:
        home = self._dir(sandbox_id)
        cgroup = self._cgroup(sandbox_id)

        def stop() -> None:
            pid_start = _read_pid(home)
            if cgroup is not None and cgroup.exists():
                cgroup.kill_all()
            if pid_start is not None and _alive(*pid_start):
                # Killing bwrap's pid-namespace init takes everything inside with it; the walk
                # also covers hosts without cgroups. SIGKILL acts on stopped processes too.
                _signal_tree(pid_start[0], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pid_start is not None and _alive(*pid_start):
                if time.monotonic() > deadline:
                    raise SandboxError(f"sandbox {sandbox_id} (pid {pid_start[0]}) survived SIGKILL")
                time.sleep(0.01)
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(home, ignore_errors=True)

        await asyncio.to_thread(stop)

    async def state(self, sandbox_id: str) -> BackendState:
        return await asyncio.to_thread(self._state, self._dir(sandbox_id))

    def _state(self, home: Path) -> BackendState:
        if not home.is_dir():
            return BackendState.MISSING
        pid_start = _read_pid(home)
        if pid_start is None or not _alive(*pid_start):
            return BackendState.STOPPED
        return BackendState.PAUSED if (home / "paused").exists() else BackendState.RUNNING

    async def list(self) -> dict[str, BackendState]:
        def scan() -> dict[str, BackendState]:
            if not self._dirs.is_dir():
                return {}
            return {d.name: self._state(d) for d in sorted(self._dirs.iterdir()) if d.is_dir()}

        return await asyncio.to_thread(scan)

    async def _pid(self, sandbox_id: str) -> int:
        home = self._dir(sandbox_id)
        pid_start = await asyncio.to_thread(_read_pid, home)
        if pid_start is None or not await asyncio.to_thread(_alive, *pid_start):
            raise SandboxError(f"sandbox {sandbox_id} is not running", code="not_found")
        return pid_start[0]


def _read_pid(home: Path) -> tuple[int, int] | None:
    try:
        pid, start = (home / "pid").read_text().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


__all__ = ["BwrapBackend", "seccomp_filter"]
