"""Throwaway Redis and PostgreSQL servers for the cluster tests: real binaries on free loopback
ports in temporary directories, which a test may kill or restart without touching the machine's
own servers. A missing binary skips the test on a developer's machine and fails it on CI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require(binary: str, hint: str) -> str:
    """The path of ``binary``; skips (fails on CI) when it is not installed."""
    found = shutil.which(binary)
    if found is None and Path(binary).is_file():
        found = binary
    if found is None:
        message = f"{binary} is not installed ({hint})"
        if IN_CI:
            pytest.fail(message + "; CI must run the cluster tests")
        pytest.skip("SKIPPING CLUSTER TEST — " + message)
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _wait_listening(port: int, up: bool, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while _listening(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not {'start' if up else 'stop'} within {within:g} s")
        await asyncio.sleep(0.05)


class RedisServer:
    """``redis-server`` on a free port, without persistence."""

    def __init__(self) -> None:
        self.binary = require("redis-server", "apt-get install redis-server; `make services` does")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="warden-test-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.dir / "redis.log").open("ab") as log:
            return subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        await _wait_listening(self.port, True, 10, "redis-server")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        await _wait_listening(self.port, False, 10, "redis-server")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parent.parent.name)
    if candidates:
        return candidates[-1].parent
    pg_ctl = require("pg_ctl", "apt-get install postgresql; `make services` does")
    return Path(pg_ctl).parent


class PostgresServer:
    """A PostgreSQL cluster made with initdb in a temporary directory (trust auth, a free
    port, its socket in the same directory); as root it runs as the ``postgres`` user."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        if not (self.bin / "initdb").exists():
            require(str(self.bin / "initdb"), "apt-get install postgresql")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="warden-test-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    async def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        await asyncio.to_thread(
            self._run, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
        )

    async def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=300"
        await asyncio.to_thread(
            self._run,
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-o",
            options,
            "-w",
            "start",
        )
        await _wait_listening(self.port, True, 30, "PostgreSQL")

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(
            self._run, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
        )

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
