"""The one place that chooses and builds sandbox backends from configuration."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from warden.config import SandboxConfig
from warden.sandbox.backend import SandboxBackend

log = logging.getLogger("warden.sandbox")


def available_backends(config: SandboxConfig) -> list[str]:
    """Backends whose programs are installed here, strongest isolation first."""
    found = []
    if shutil.which(config.runsc):
        found.append("gvisor")
    if shutil.which("bwrap"):
        found.append("bwrap")
    return found


def build_backends(config: SandboxConfig, home: Path) -> dict[str, SandboxBackend]:
    """Backends by name; the first is the default for templates that name none. Empty when
    sandboxes are disabled or nothing is installed (sandbox routes then answer 503)."""
    if not config.enabled:
        return {}
    from warden.sandbox.guest import guest_dir
    from warden.sandbox.rootfs import build_rootfs

    installed = available_backends(config)
    # auto: the strongest isolation installed here, and only that one.
    wanted = [config.backend] if config.backend != "auto" else installed[:1]
    backends: dict[str, SandboxBackend] = {}
    names = [n for n in wanted if n in installed]
    needed = {t.backend for t in config.templates if t.backend} - set(names)
    names += [n for n in needed if n in installed]
    if not names:
        log.warning("no sandbox backend: install runsc (gVisor) or bubblewrap to run agent code")
        return {}
    rootfs = build_rootfs(home / "rootfs")
    for name in names:
        if name == "gvisor":
            from warden.sandbox.gvisor import GVisorBackend

            backends[name] = GVisorBackend(
                home / "gvisor", rootfs, guest_dir(), config.runsc, config.platform
            )
        elif name == "bwrap":
            from warden.sandbox.bwrap import BwrapBackend

            if "gvisor" not in names:
                log.warning(
                    "sandboxes use bubblewrap, which is weaker than gVisor: user code runs on the "
                    "host kernel (namespaces, seccomp, rlimits); install runsc for gVisor isolation"
                )
            backends[name] = BwrapBackend(home / "bwrap", guest_dir(), rootfs=rootfs)
    return backends
