"""Sandboxes: isolated places where agent code runs (gVisor, or bubblewrap where gVisor is not
installed), each with a supervisor inside that the host drives over docs/sandbox-protocol.md."""

from __future__ import annotations

# One import line per module; `__all__` stays one sorted list (ruff checks it): add names to both.
from warden.sandbox.backend import BackendState, ControlStream, SandboxBackend, SandboxError
from warden.sandbox.bwrap import BwrapBackend
from warden.sandbox.gvisor import GVisorBackend
from warden.sandbox.rootfs import build_rootfs, check_host
from warden.sandbox.spec import NetworkPolicy, ResourceLimits, SandboxSpec

__all__ = [
    "BackendState",
    "BwrapBackend",
    "ControlStream",
    "GVisorBackend",
    "NetworkPolicy",
    "ResourceLimits",
    "SandboxBackend",
    "SandboxError",
    "SandboxSpec",
    "build_rootfs",
    "check_host",
]
