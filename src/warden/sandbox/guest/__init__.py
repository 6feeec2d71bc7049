"""The guest side of sandboxes. `sandboxd.py`, `kernel.py` and `bridge.py` run INSIDE sandboxes
under the sandbox's own Python: they use the standard library only and import nothing from warden.

Backends mount this folder read-only at /opt/warden; `guest_dir` says where it is on the host."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["guest_dir"]


def guest_dir() -> Path:
    """The folder holding the guest programs, to bind-mount at /opt/warden."""
    folder = resources.files(__name__)
    if not isinstance(folder, Path):
        raise RuntimeError(f"warden must be installed as files, not in an archive, to mount {folder}")
    return folder
