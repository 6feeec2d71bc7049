"""What a backend needs to start one sandbox: limits, network policy, environment and the
host folders it mounts. Templates (YAML) resolve to a `SandboxSpec`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    cpus: float = 1.0
    """CPU cores' worth of time (cgroup quota)."""
    memory_mb: int = 1024
    """Memory of the whole sandbox; user processes get a little less (RLIMIT_AS)."""
    pids: int = 128
    """Processes and threads user code may have."""
    disk_mb: int = 1024
    """Size of /workspace."""
    output_bytes: int = 1_000_000
    """Output streamed back per call; the rest is dropped."""
    timeout: float = 60.0
    """Default wall-clock limit of one call."""


EGRESS_PROXY_PORT = 3128
"""Where the supervisor listens inside the sandbox for programs' proxied connections."""


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    egress: bool = False
    """Off by default: the sandbox has only its own loopback. On, the supervisor listens on
    127.0.0.1:`EGRESS_PROXY_PORT` and relays each connection to the host's egress proxy, which
    applies the template's allow-list; the sandbox itself still has no network interface."""


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    sandbox_id: str
    workspace: Path
    """Host folder mounted read-write at /workspace; it outlives pause, hibernation and restarts."""
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    env: dict[str, str] = field(default_factory=dict)
    user_uid: int = 1000
    user_gid: int = 1000
