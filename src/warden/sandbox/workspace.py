"""Workspaces with a real disk quota: each is an ext4 filesystem in a sparse file, loop-mounted
at the workspace folder, so a sandbox that fills its disk fills only its own volume. Where
loop mounts are not possible (not root, no loop devices) workspaces are plain folders and the
quota is not enforced; `quota_enforced` says which."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path

from warden.sandbox.backend import SandboxError

log = logging.getLogger("warden.sandbox")


async def _run(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"{args[0]} timed out"
    return proc.returncode or 0, out.decode(errors="replace").strip()


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


class WorkspaceVolumes:
    def __init__(self, root: Path, *, uid: int = 1000, gid: int = 1000) -> None:
        self.root = root
        self.images = root / "volumes"
        self.images.mkdir(parents=True, exist_ok=True)
        self.uid = uid
        self.gid = gid
        self.quota_enforced = (
            os.geteuid() == 0 and bool(shutil.which("mkfs.ext4")) and Path("/dev/loop-control").exists()
        )
        if not self.quota_enforced:
            log.warning(
                "workspace disk quotas are not enforced here (needs root, mkfs.ext4 and loop devices)"
            )

    def image(self, sandbox_id: str) -> Path:
        return self.images / f"{sandbox_id}.ext4"

    async def create(self, sandbox_id: str, path: Path, size_mb: int) -> None:
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        if not self.quota_enforced:
            with contextlib.suppress(PermissionError):
                os.chown(path, self.uid, self.gid)
            return
        image = self.image(sandbox_id)
        await asyncio.to_thread(_sparse_file, image, size_mb)
        # A 4 MiB journal (mkfs would reserve 32 MiB on a 1 GiB volume): plenty for one
        # sandbox's writes, and it is most of what a hibernated sandbox holds on disk.
        journal = ["-J", "size=4"] if size_mb >= 128 else []
        code, out = await _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            *journal,
            "-E",
            f"root_owner={self.uid}:{self.gid}",
            str(image),
        )
        if code != 0:
            raise SandboxError(f"cannot make the workspace filesystem: {out}", code="workspace_failed")
        await self.mount(sandbox_id, path)
        with contextlib.suppress(OSError):
            (path / "lost+found").rmdir()

    async def mount(self, sandbox_id: str, path: Path) -> None:
        """Mount the volume if it is not (after a host reboot, or for a restored copy)."""
        if not self.quota_enforced or _mounted(path):
            return
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        code, out = await _run("mount", "-o", "loop,nosuid,nodev", str(self.image(sandbox_id)), str(path))
        if code != 0:
            raise SandboxError(f"cannot mount the workspace: {out}", code="workspace_failed")

    async def unmount(self, path: Path) -> None:
        if _mounted(path):
            code, _ = await _run("umount", str(path))
            if code != 0:
                # Busy (a process still holds it): detach now, freed when released.
                await _run("umount", "-l", str(path))

    async def destroy(self, sandbox_id: str, path: Path) -> None:
        await self.unmount(path)
        await asyncio.to_thread(shutil.rmtree, path, True)
        with contextlib.suppress(FileNotFoundError):
            self.image(sandbox_id).unlink()

    async def save(self, sandbox_id: str, path: Path, dest: Path) -> None:
        """Copy the workspace to ``dest`` (a file for volumes, a folder otherwise); the
        sandbox must be stopped so the copy is consistent."""
        if self.quota_enforced:
            # Flush the mounted filesystem into its image file first, or the copy misses
            # whatever still sits in the page cache.
            code, out = await _run("sync", "-f", str(path))
            if code != 0:
                raise SandboxError(f"cannot flush the workspace: {out}", code="workspace_failed")
            await asyncio.to_thread(_sparse_copy, self.image(sandbox_id), dest)
        else:
            await asyncio.to_thread(shutil.copytree, path, dest, symlinks=True)

    async def load(self, source: Path, sandbox_id: str, path: Path) -> None:
        """Make a new workspace from what `save` wrote."""
        if self.quota_enforced and await asyncio.to_thread(source.is_file):
            await asyncio.to_thread(_sparse_copy, source, self.image(sandbox_id))
            await self.mount(sandbox_id, path)
        else:
            await asyncio.to_thread(shutil.copytree, source, path, symlinks=True)

    def mounted_paths(self) -> set[Path]:
        """Workspace folders currently mounted from our volumes (for leak checks)."""
        found = set()
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                mount_point = Path(line.split()[4])
                if mount_point.is_relative_to(self.root):
                    found.add(mount_point)
        return found


def _sparse_file(path: Path, size_mb: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb * 2**20)


def _sparse_copy(src: Path, dest: Path) -> None:
    """Copy keeping holes, so a 1 GiB volume holding 1 MiB costs about 1 MiB."""
    import subprocess

    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True, capture_output=True)
