"""The `SandboxBackend` protocol: what gVisor, bubblewrap and (later) Kubernetes implement.
The manager owns lifecycle and state; a backend only starts, connects, freezes, saves,
restores and removes sandboxes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from warden.errors import WardenError
from warden.sandbox.spec import SandboxSpec


class SandboxError(WardenError):
    code = "sandbox_error"
    http_status = 502


class BackendState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    MISSING = "missing"


@dataclass
class ControlStream:
    """A byte stream to the guest supervisor (see docs/sandbox-protocol.md)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    process: asyncio.subprocess.Process | None = None
    """The bridge process, when the stream goes through one."""

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        if self.process is not None and self.process.returncode is None:
            try:
                async with asyncio.timeout(2):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class SandboxBackend(Protocol):
    name: str
    supports_snapshots: bool
    """Memory snapshots (checkpoint/restore/fork); without them hibernation keeps only files."""

    async def create(self, spec: SandboxSpec) -> None:
        """Start the sandbox with the supervisor running; return once it answers."""

    async def connect(self, sandbox_id: str, endpoint: str = "control") -> ControlStream:
        """A stream to the guest's ``/run/warden/<endpoint>.sock``: ``control`` (the protocol)
        or ``egress`` (the egress tunnel)."""

    async def pause(self, sandbox_id: str) -> None: ...

    async def resume(self, sandbox_id: str) -> None: ...

    async def checkpoint(self, sandbox_id: str, image_dir: Path) -> None:
        """Save memory and process state to ``image_dir``; the sandbox stops."""

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        """Start ``spec.sandbox_id`` from an image (any image: this is also how fork works)."""

    async def destroy(self, sandbox_id: str) -> None:
        """Stop and remove; succeeds if already gone."""

    async def state(self, sandbox_id: str) -> BackendState: ...

    async def list(self) -> dict[str, BackendState]:
        """Every sandbox this backend has on this host (to re-adopt or clean up after a restart)."""
