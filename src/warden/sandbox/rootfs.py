"""The sandbox root filesystem: a skeleton of mount points and symlinks over the host's /usr,
with a small curated /etc (no secrets), plus `check_host` to say what this machine lacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

ROOTFS_VERSION = "2"
"""Bumped when the layout changes; a rootfs with another version is rebuilt."""

_MARKER = ".warden-rootfs"

# The host's merged-/usr layout: the sandbox binds /usr and these links make /bin, /lib... work.
_SYMLINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}

# Mount points only: every one is covered by a bind or tmpfs mount in the backends.
_DIRS = ("usr", "etc", "proc", "dev", "sys", "tmp", "run", "workspace", "opt/warden", "var")

# Copied from the host's /etc when present. An allow-list on purpose: nothing here is secret
# (no shadow, gshadow, ssh, ssl/private, machine-id), and each entry has a reason to be there.
_ETC_FILES = (
    "ld.so.cache",  # the dynamic linker finds libraries without scanning
    "ld.so.conf",
    "mime.types",  # mimetypes module
    "matplotlibrc",  # Debian's matplotlib reads its default rc file from /etc
    "protocols",  # socket.getprotobyname
    "services",  # socket.getservbyname
    "os-release",  # platform.freedesktop_os_release
    "debian_version",
    "ssl/openssl.cnf",  # /usr/lib/ssl/openssl.cnf links here
)
_ETC_DIRS = (
    "ld.so.conf.d",
    "alternatives",  # numpy's BLAS/LAPACK and many /usr/bin tools are links through here
    "fonts",  # fontconfig, for matplotlib text
    "ssl/certs",  # public CA certificates only, for when egress is allowed
    "python3",
    "python3.11",  # /usr/lib/python3.11/sitecustomize.py links here
)
_NEVER = {"shadow", "shadow-", "gshadow", "gshadow-", "ssh", "private", "sudoers", "sudoers.d", "machine-id"}

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/workspace:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
_GROUP = """\
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
"""
# Only loopback: the sandbox has no network of its own, and its hostname resolves locally.
_HOSTS = """\
127.0.0.1\tlocalhost sandbox
::1\tlocalhost ip6-localhost ip6-loopback
"""
_NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
ethers: files
rpc: files
"""


def build_rootfs(dest: Path, *, host: Path = Path("/")) -> Path:
    """Create the rootfs at ``dest`` unless an up-to-date one is there; return ``dest``.

    Built in a temporary sibling and renamed into place, so a crash or a concurrent builder
    never leaves a half-made rootfs. An outdated rootfs is moved aside, not deleted: running
    sandboxes may still be reading its /etc."""
    if _current(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _populate(tmp, host)
        if dest.exists() and not _current(dest):
            dest.rename(dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            tmp.rename(dest)
        except OSError:
            # Another process renamed its copy in first (rename onto a non-empty dir fails).
            if not _current(dest):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _current(dest: Path) -> bool:
    try:
        return (dest / _MARKER).read_text().strip() == ROOTFS_VERSION
    except OSError:
        return False


def _populate(root: Path, host: Path) -> None:
    host_etc = host / "etc"
    root.mkdir(mode=0o755)
    for name in _DIRS:
        (root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, target in _SYMLINKS.items():
        (root / name).symlink_to(target)
    # Some programs insist on /var/tmp; /tmp is a tmpfs in every sandbox.
    (root / "var" / "tmp").symlink_to("/tmp")
    # fontconfig's system cache: without it every fc-list (matplotlib calls it) rescans fonts.
    fc_cache = host / "var" / "cache" / "fontconfig"
    if fc_cache.is_dir():
        shutil.copytree(fc_cache, root / "var" / "cache" / "fontconfig", symlinks=True)
    etc = root / "etc"
    for rel in _ETC_FILES:
        src = host_etc / rel
        if _allowed(rel) and src.is_file():
            (etc / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, etc / rel, follow_symlinks=True)
    for rel in _ETC_DIRS:
        src = host_etc / rel
        if _allowed(rel) and src.is_dir():
            # Links stay links (alternatives point into /usr, which the sandbox sees too).
            shutil.copytree(src, etc / rel, symlinks=True, ignore=_ignore_secrets)
    written = {
        "passwd": _PASSWD,
        "group": _GROUP,
        "hosts": _HOSTS,
        "hostname": "sandbox\n",
        "nsswitch.conf": _NSSWITCH,
        "timezone": "Etc/UTC\n",
    }
    for name, text in written.items():
        (etc / name).write_text(text)
        (etc / name).chmod(0o644)
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    (root / _MARKER).write_text(ROOTFS_VERSION + "\n")


def _allowed(rel: str) -> bool:
    return not set(Path(rel).parts) & _NEVER


def _ignore_secrets(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _NEVER}


_CHECK_MODULES = "import importlib.util as u; print(' '.join(m for m in ('numpy', 'pandas', 'matplotlib') if u.find_spec(m) is None))"


def check_host(runsc: str = "runsc", python: str = "/usr/bin/python3") -> list[str]:
    """What this machine lacks to run gVisor sandboxes, each with its fix; empty when ready.

    Blocking (it may start a Python for a moment): call it at startup or from the CLI."""
    fix = "apt-get install runsc python3-numpy python3-pandas python3-matplotlib"
    problems: list[str] = []
    if shutil.which(runsc) is None:
        problems.append(f"runsc (gVisor) is not installed or not on PATH: {fix}")
    if not os.access(python, os.X_OK):
        problems.append(f"{python} is missing (the sandbox runs the host's Python): {fix}")
        return problems
    try:
        out = subprocess.run(
            [python, "-I", "-c", _CHECK_MODULES], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        problems.append(f"{python} does not run ({exc}): {fix}")
        return problems
    if out:
        problems.append(f"{python} lacks {', '.join(out)}: {fix}")
    return problems


__all__ = ["ROOTFS_VERSION", "build_rootfs", "check_host"]
