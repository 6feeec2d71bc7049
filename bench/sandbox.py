"""Sandbox latency, snapshots and density on the gVisor backend, each against a baseline measured
in the same run.

The SandboxManager is built directly (no HTTP, no background loops: ``manager.start()`` is not
called, pools are filled by ``fill_pools()`` outside the timed regions) on a throwaway SQLite
database and home directory; the runsc state directory is private to the run. Every sandbox
is destroyed through the manager at the end and the run checks that ``runsc list`` is empty
and no loop mount is left under its directory.

1. Cold create → first result: ``create`` of a template with no pool, then ``run_code("1+1")``
   (which opens the control channel: a ``runsc exec`` of the bridge). Baselines: ``python3 -c
   pass`` (the floor of starting any interpreter) and ``runsc --network=none do python3 -c
   "print(2)"`` (a bare gVisor sandbox start, same runsc, same platform).
2. Warm claim → first result: a pool of k sandboxes filled beforehand, then ``create`` (claims
   one) + ``run_code("1+1")``; the pool is refilled between samples, outside the timing.
3. ``run_code("1+1")`` round trip in a warm context, through the manager (record read, touch
   write, channel). Baselines on the same channel: the protocol's ``hello`` (the channel floor:
   JSON over the runsc-exec bridge and the supervisor's socket) and ``run_code`` sent on the
   channel directly (no database).
4. Pause and resume through the manager, each timed; the sandbox must answer after resume.
5. Snapshot and restore of a sandbox holding ~100 MB of Python objects (``x = [bytes(1024)
   for _ in range(100_000)]``): ``create_snapshot`` (checkpoint, copy of the workspace volume,
   restart of the origin from its image), then ``restore`` + a first ``run_code`` that proves
   ``len(x) == 100000``. Size on disk = blocks of the snapshot folder.
6. ``fork(4)`` of that sandbox: total time until every fork has answered ``len(x)``.
7. Density: sandboxes of a pool-less template (memory_mb 256) started one after another, up to
   the target count or a time budget; host memory = VmRSS and Pss (smaps_rollup) of every
   process whose command line names the run's state directory plus their descendants (the
   ptrace stubs hold guest memory), and MemAvailable before/after. Then 10 % are hibernated
   (checkpoint to disk, sandbox stopped): image size per sandbox and memory freed.
8. Hibernated sandboxes held at once (1,000; 50 with --quick), measured, not extrapolated.
   Creating and hibernating 1,000 through gVisor would take about 50 minutes here (runsc
   delete alone takes ~2 s), so: (a) 20 (quick: 5) sandboxes of the ``dense`` template are
   created through the manager, each runs ``x = '<its own value>'``, and each is hibernated
   with ``manager.hibernate`` (timed); (b) the count is brought to 1,000 by cloning the first of
   them: per clone, a record written by the manager's own ``_insert`` (same columns, state
   ``starting``) then ``_set(state='hibernated', image_path=<images>/<id>)``, a copy of its
   checkpoint image folder at ``<home>/images/<id>`` and of its workspace volume at
   ``<home>/volumes/<id>.ext4`` (an empty, unmounted workspace folder, as after a host
   reboot). Files are copied block for block: FIEMAP of the source (after ``sync -f`` of its
   mounted volume, as ``volumes.save`` does), data extents with copy_file_range, unwritten
   extents (the ext4 journal mkfs allocates) with fallocate, holes kept, so a clone holds the
   same blocks as its source (ext4 has no reflinks: nothing is shared). 4 clones at a time,
   refused if it would leave less than 10 GiB free;
   (c) with all present: no host process may name any of them and none may be in
   ``runsc list``; host processes (as in 7) before the section and with all present; blocks on
   disk of every image folder and volume (real and cloned apart), df free space, the time of
   ``reap()``, ``list_sandboxes()`` (1,000+ records) and ``reconcile()``; (d) 10 random clones
   and 5 random real ones are woken by ``run_code("x")`` (the manager's normal path restores
   them transparently), each must answer its own ``x``; wake → first result is timed; they are
   hibernated again; (e) all are destroyed through the manager (batches of 8) and the run
   checks no mount of theirs is left.

    python -m bench.sandbox [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import math
import os
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import Target, machine_info, parser, ratio, run, sqlite_url, summary, write_result
from warden.config import SandboxConfig, SandboxLimitsConfig, SandboxTemplate
from warden.sandbox.factory import build_backends
from warden.sandbox.manager import LIVE_STATES, SandboxManager, SandboxRecord, SandboxState
from warden.service.keys import KeyService
from warden.store.database import Database
from warden.store.migrate import upgrade
from warden.store.schema import sandboxes

NAME = "sandbox"
WARM_TARGET_MS = 25.0
ROUNDTRIP_TARGET_MS = 5.0
DENSITY_TARGET = 100
HIBERNATED_TARGET = 1000
QUICK_HIBERNATED = 50
BIG_CODE = "x = [bytes(1024) for _ in range(100_000)]"
SIZE_CODE = "import sys; sum(map(sys.getsizeof, x)) + sys.getsizeof(x)"
DESTROY_BATCH = 8
CLONE_PARALLEL = 4
PROGRESS_EVERY = 100
DISK_MARGIN = 10 * 2**30
"""Free disk the cloning must leave (the disk is shared)."""


def ms(seconds: float) -> float:
    return seconds * 1000


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = await fn()
    return ms(time.perf_counter() - t0), value


def _dir_blocks(path: Path) -> int:
    """Bytes on disk of a file or a folder (blocks, so sparse files count what they hold)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    if not path.exists():
        return 0
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- cloning files block for block -----------------------------------------------------------

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNWRITTEN = 0x800
_FIEMAP_HEAD = struct.Struct("=QQLLLL")  # fm_start, fm_length, fm_flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQQQLLLL")  # logical, physical, length, 2 reserved, flags, 3 reserved


def file_extents(path: Path) -> list[tuple[int, int, bool]]:
    """(offset, length, unwritten) of every allocated extent of ``path`` (FIEMAP, after a sync).
    mkfs.ext4 allocates the journal of a volume as unwritten extents: they count in st_blocks
    and in df, but a copy that reads the data sees zeros there and would leave holes."""
    found: list[tuple[int, int, bool]] = []
    start, count = 0, 512
    with open(path, "rb") as f:
        while True:
            buf = bytearray(_FIEMAP_HEAD.size + count * _FIEMAP_EXTENT.size)
            _FIEMAP_HEAD.pack_into(buf, 0, start, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, count, 0)
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            mapped = _FIEMAP_HEAD.unpack_from(buf)[3]
            last = mapped == 0
            for i in range(mapped):
                logical, _, length, _, _, flags, *_ = _FIEMAP_EXTENT.unpack_from(
                    buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size
                )
                found.append((logical, length, bool(flags & FIEMAP_EXTENT_UNWRITTEN)))
                start = logical + length
                last = last or bool(flags & FIEMAP_EXTENT_LAST)
            if last:
                return found


@dataclass(frozen=True)
class FilePlan:
    relative: str
    size: int
    mode: int
    extents: list[tuple[int, int, bool]]


def clone_plan(source: Path) -> list[FilePlan]:
    """The files of ``source`` (a file or a folder) with their extents, read once for all clones."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return [
        FilePlan(
            "" if p == source else str(p.relative_to(source)),
            p.stat().st_size,
            p.stat().st_mode & 0o7777,
            file_extents(p),
        )
        for p in files
    ]


def clone_files(source: Path, dest: Path, plan: list[FilePlan]) -> None:
    """Copy ``source`` to ``dest`` block for block: data extents with copy_file_range, unwritten
    extents with fallocate, holes left as holes, so the copy holds the same blocks on disk
    (ext4 here has no reflinks: nothing is shared with the source)."""
    for item in plan:
        src = source / item.relative if item.relative else source
        dst = dest / item.relative if item.relative else dest
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            os.ftruncate(fout.fileno(), item.size)
            for offset, length, unwritten in item.extents:
                length = min(length, item.size - offset)
                if length <= 0:
                    continue
                if unwritten:
                    os.posix_fallocate(fout.fileno(), offset, length)
                    continue
                done = 0
                while done < length:
                    n = os.copy_file_range(
                        fin.fileno(), fout.fileno(), length - done, offset + done, offset + done
                    )
                    if n == 0:
                        break
                    done += n
        os.chmod(dst, item.mode)


def processes_naming(ids: set[str]) -> list[int]:
    """Host processes whose command line names any of ``ids``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(i in cmd for i in ids):
            found.append(int(entry.name))
    return found


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def host_processes(marker: str) -> dict[str, Any]:
    """RSS and Pss (MiB) of the processes whose command line contains ``marker`` and of all
    their descendants, by kind: sentry (runsc-sandbox), gofer, exec bridges, ptrace stubs."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        cmdlines[pid] = cmd
    kind: dict[int, str] = {}
    for pid, cmd in cmdlines.items():
        if marker in cmd:
            if "runsc-sandbox" in cmd or " boot " in cmd:
                kind[pid] = "sentry"
            elif "runsc-gofer" in cmd or " gofer " in cmd:
                kind[pid] = "gofer"
            elif " exec " in cmd:
                kind[pid] = "exec_bridge"
            else:
                kind[pid] = "runsc_other"
    changed = True
    while changed:  # descendants (bounded: each pass adds at least one pid, or stops)
        changed = False
        for pid, ppid in parents.items():
            if pid not in kind and ppid in kind:
                kind[pid] = "stub" if kind[ppid] in ("sentry", "stub") else "child"
                changed = True
    totals: dict[str, dict[str, float]] = {}
    for pid, k in kind.items():
        rss = pss = 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
        except OSError:
            continue
        t = totals.setdefault(k, {"processes": 0, "rss_mib": 0.0, "pss_mib": 0.0})
        t["processes"] += 1
        t["rss_mib"] += rss / 1024
        t["pss_mib"] += pss / 1024
    for t in totals.values():
        t["rss_mib"] = round(t["rss_mib"], 1)
        t["pss_mib"] = round(t["pss_mib"], 1)
    return {
        "processes": sum(int(t["processes"]) for t in totals.values()),
        "rss_mib": round(sum(t["rss_mib"] for t in totals.values()), 1),
        "pss_mib": round(sum(t["pss_mib"] for t in totals.values()), 1),
        "by_kind": totals,
    }


async def capture(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def _sync(path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sync", "-f", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def wall_of(argv: list[str], expect: str | None = None) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    elapsed = ms(time.perf_counter() - t0)
    if proc.returncode != 0 or (expect is not None and out.decode().strip() != expect):
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-500:]}")
    return elapsed


class Bench:
    def __init__(self, manager: SandboxManager, tenant: str, budget_end: float) -> None:
        self.m = manager
        self.tenant = tenant
        self.budget_end = budget_end
        self.prestarted: set[str] = set()

    def left(self) -> float:
        return self.budget_end - time.monotonic()

    async def run1(self, sandbox_id: str, code: str = "1+1") -> dict[str, Any]:
        out = await self.m.run_code(self.tenant, sandbox_id, code, timeout=60)
        if out.get("error"):
            raise RuntimeError(f"run_code {code!r} failed: {out['error']}")
        return out

    async def destroy_all(self, records: list[SandboxRecord]) -> None:
        for i in range(0, len(records), DESTROY_BATCH):
            await asyncio.gather(*(self.m._destroy(r) for r in records[i : i + DESTROY_BATCH]))

    # -- 1 --------------------------------------------------------------------------------

    async def cold(self, n: int) -> dict[str, Any]:
        total, create, first, destroy = [], [], [], []
        for _ in range(n):
            t_create, rec = await timed(lambda: self.m.create(self.tenant, "cold"))
            t_first, out = await timed(lambda rec=rec: self.run1(rec.id))
            assert out["value"] == "2", out
            create.append(t_create)
            first.append(t_first)
            total.append(t_create + t_first)
            t_destroy, _ = await timed(lambda rec=rec: self.m._destroy(rec))
            destroy.append(t_destroy)
        return {
            "create_to_first_result_ms": summary(total),
            "create_ms": summary(create),
            "first_run_code_ms": summary(first),
            "destroy_ms": summary(destroy),
        }

    # -- 2 --------------------------------------------------------------------------------

    async def prestart_pool_contexts(self) -> None:
        """What-if, from the bench side only: start the default Python context of every pooled
        sandbox (one run_code on its already open channel) before it is claimed."""
        async with self.m.db.read() as conn:
            rows = await conn.execute(
                sandboxes.select().where(
                    sandboxes.c.tenant_id.is_(None), sandboxes.c.state == SandboxState.RUNNING.value
                )
            )
            pooled = [SandboxRecord.from_row(r) for r in rows]
        for rec in pooled:
            if rec.id not in self.prestarted:
                await self.m._channels[rec.id].call("run_code", code="pass", context="default", timeout=60)
                self.prestarted.add(rec.id)

    async def warm(self, n: int, k: int, prestart: bool = False) -> dict[str, Any]:
        t_fill, _ = await timed(self.m.fill_pools)
        if prestart:
            await self.prestart_pool_contexts()
        claimed: list[SandboxRecord] = []
        total, claim, first, refill, guest = [], [], [], [], []
        try:
            for _ in range(n):
                t_claim, rec = await timed(lambda: self.m.create(self.tenant, "python"))
                claimed.append(rec)
                assert rec.metadata == {} and rec.tenant_id == self.tenant
                t_first, out = await timed(lambda rec=rec: self.run1(rec.id))
                assert out["value"] == "2", out
                claim.append(t_claim)
                first.append(t_first)
                total.append(t_claim + t_first)
                guest.append(float(out.get("duration_ms") or 0.0))
                t_refill, started = await timed(self.m.fill_pools)
                assert started == 1, started
                refill.append(t_refill)
                if prestart:
                    await self.prestart_pool_contexts()
        finally:
            await self.destroy_all(claimed)
        return {
            "pool_size": k,
            "initial_fill_ms": round(t_fill, 1),
            "claim_to_first_result_ms": summary(total),
            "claim_ms": summary(claim),
            "first_run_code_ms": summary(first),
            "first_run_code_guest_duration_ms": summary(guest),
            "refill_one_ms": summary(refill),
        }

    # -- 3 --------------------------------------------------------------------------------

    async def roundtrip(self, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rec = await self.m.create(self.tenant, "python")  # from the pool
        try:
            for _ in range(10):  # warm-up: context, channel, caches
                await self.run1(rec.id)
            channel = self.m._channels[rec.id]
            via_manager, direct, hello = [], [], []
            for _ in range(n):
                t, out = await timed(lambda: self.run1(rec.id))
                assert out["value"] == "2"
                via_manager.append(t)
                t, out = await timed(
                    lambda: channel.call("run_code", code="1+1", context="default", timeout=60)
                )
                assert out["value"] == "2"
                direct.append(t)
                t, _ = await timed(lambda: channel.call("hello"))
                hello.append(t)
            guest_ms = (await self.run1(rec.id)).get("duration_ms")
            ours = {
                "manager_run_code_ms": summary(via_manager),
                "channel_run_code_ms": summary(direct),
                "guest_reported_duration_ms_last": guest_ms,
                "interleaved": "manager run_code, channel run_code and hello alternate in each round",
            }
            base = {"channel_hello_ms": summary(hello)}
            ours["vs_hello_p50_ratio"] = ratio(
                ours["manager_run_code_ms"]["p50"], base["channel_hello_ms"]["p50"]
            )

            # -- 4: pause / resume on the same sandbox --------------------------------------
            pause, resume, after = [], [], []
            for _ in range(self.pr_n):
                t, got = await timed(lambda: self.m.pause(self.tenant, rec.id))
                assert got.state is SandboxState.PAUSED, got.state
                pause.append(t)
                t, got = await timed(lambda: self.m.resume(self.tenant, rec.id))
                assert got.state is SandboxState.RUNNING, got.state
                resume.append(t)
                t, out = await timed(lambda: self.run1(rec.id))
                assert out["value"] == "2"
                after.append(t)
            ours["pause_resume"] = {
                "pause_ms": summary(pause),
                "resume_ms": summary(resume),
                "first_run_code_after_resume_ms": summary(after),
            }
            return ours, base
        finally:
            await self.m._destroy(rec)

    pr_n = 10
    reserve_s = 45.0

    # -- 5 and 6 --------------------------------------------------------------------------

    async def snapshots(self, n: int, forks: int) -> dict[str, Any]:
        origin = await self.m.create(self.tenant, "cold")
        made: list[SandboxRecord] = [origin]
        try:
            t_load, _ = await timed(lambda: self.run1(origin.id, BIG_CODE))
            objects_bytes = int((await self.run1(origin.id, SIZE_CODE))["value"])
            snap_ms, restore_ms, first_ms, restore_total, sizes, image_sizes = [], [], [], [], [], []
            for _ in range(n):
                t, snap = await timed(lambda: self.m.create_snapshot(self.tenant, origin.id))
                snap_ms.append(t)
                sizes.append(snap.size_bytes)
                image_sizes.append(await asyncio.to_thread(_dir_blocks, Path(snap.image_path)))
                t_restore, rec = await timed(lambda snap=snap: self.m.restore(self.tenant, snap.id))
                made.append(rec)
                t_first, out = await timed(lambda rec=rec: self.run1(rec.id, "len(x)"))
                assert out["value"] == "100000", out
                restore_ms.append(t_restore)
                first_ms.append(t_first)
                restore_total.append(t_restore + t_first)
                await self.m._destroy(rec)
                made.remove(rec)
            out = await self.run1(origin.id, "len(x)")  # the origin continues after its snapshots
            assert out["value"] == "100000", out
            result: dict[str, Any] = {
                "python_objects_mib": round(objects_bytes / 2**20, 1),
                "load_objects_ms": round(t_load, 1),
                "create_snapshot_ms": summary(snap_ms),
                "restore_ms": summary(restore_ms),
                "first_run_code_after_restore_ms": summary(first_ms),
                "restore_to_first_result_ms": summary(restore_total),
                "snapshot_size_mib": round(sum(sizes) / len(sizes) / 2**20, 1),
                "snapshot_memory_image_mib": round(sum(image_sizes) / len(image_sizes) / 2**20, 1),
                "snapshot_size_note": "size = blocks of the snapshot folder (memory image + sparse copy "
                "of the workspace volume)",
            }
            # -- 6: fork ---------------------------------------------------------------------
            t0 = time.perf_counter()
            children = await self.m.fork(self.tenant, origin.id, forks)
            t_fork = ms(time.perf_counter() - t0)
            made += children
            outs = await asyncio.gather(*(self.run1(c.id, "len(x)") for c in children))
            t_all = ms(time.perf_counter() - t0)
            assert all(o["value"] == "100000" for o in outs), outs
            result["fork"] = {
                "count": forks,
                "fork_call_ms": round(t_fork, 1),
                "fork_to_all_first_results_ms": round(t_all, 1),
                "per_sandbox_ms": round(t_all / forks, 1),
                "every_fork_has_x": True,
            }
            return result
        finally:
            await self.destroy_all(made)

    # -- 7 --------------------------------------------------------------------------------

    async def density(self, target: int, budget_s: float) -> dict[str, Any]:
        marker = str(self.m.home / "gvisor")
        procs_before = host_processes(marker)
        avail_before = mem_available_mib()
        up: list[SandboxRecord] = []
        create_ms: list[float] = []
        stopped_by = "target reached"
        result: dict[str, Any] = {}
        deadline = time.monotonic() + budget_s
        try:
            while len(up) < target:
                if time.monotonic() > deadline or self.left() < self.reserve_s:
                    stopped_by = f"time budget ({budget_s:.0f} s) ran out"
                    break
                try:
                    t, rec = await timed(lambda: self.m.create(self.tenant, "dense"))
                except Exception as exc:
                    stopped_by = f"create failed: {type(exc).__name__}: {str(exc)[:300]}"
                    break
                up.append(rec)
                create_ms.append(t)
            await asyncio.sleep(1.0)  # let the last ones settle to idle
            procs_up = host_processes(marker)
            avail_up = mem_available_mib()
            result |= {
                "attempted_up_to": target,
                "running": len(up),
                "stopped_by": stopped_by,
                "create_ms": summary(create_ms),
                "create_first10_ms": summary(create_ms[:10]),
                "create_last10_ms": summary(create_ms[-10:]),
                "mem_available_mib_before": avail_before,
                "mem_available_mib_after": avail_up,
                "mem_available_drop_per_sandbox_mib": round((avail_before - avail_up) / len(up), 1)
                if up
                else None,
                "host_processes_before": procs_before,
                "host_processes": procs_up,
                "host_rss_per_sandbox_mib": (
                    round((procs_up["rss_mib"] - procs_before["rss_mib"]) / len(up), 1) if up else None
                ),
                "host_pss_per_sandbox_mib": (
                    round((procs_up["pss_mib"] - procs_before["pss_mib"]) / len(up), 1) if up else None
                ),
                "host_processes_note": "per sandbox = (after - before) / running; 'before' holds the "
                "sandboxes of the other sections still alive (the warm pool)",
            }
            if not up:
                return result
            last = up[-1]
            t_first, _ = await timed(lambda: self.run1(last.id))
            rtt = []
            for _ in range(50):
                t, _ = await timed(lambda: self.run1(last.id))
                rtt.append(t)
            result["last_sandbox"] = {"first_run_code_ms": round(t_first, 1), "run_code_ms": summary(rtt)}

            # hibernate 10 % (not the last one: its channel is open)
            victims = up[: max(1, len(up) // 10)]
            procs_pre = host_processes(marker)
            avail_pre = mem_available_mib()
            hib_ms, image_bytes, volume_bytes = [], [], []
            for rec in victims:
                t, ok = await timed(lambda rec=rec: self.m.hibernate(rec))
                assert ok
                hib_ms.append(t)
                fresh = await self.m._record(rec.id)
                assert fresh is not None and fresh.state is SandboxState.HIBERNATED and fresh.image_path
                image_bytes.append(await asyncio.to_thread(_dir_blocks, Path(fresh.image_path)))
                volume_bytes.append(await asyncio.to_thread(_dir_blocks, self.m.volumes.image(rec.id)))
            await asyncio.sleep(0.5)
            procs_post = host_processes(marker)
            avail_post = mem_available_mib()
            image_mib = sum(image_bytes) / len(image_bytes) / 2**20
            volume_mib = sum(volume_bytes) / len(volume_bytes) / 2**20
            t_wake, out = await timed(lambda: self.run1(victims[0].id))
            assert out["value"] == "2", out
            result["hibernate"] = {
                "count": len(victims),
                "hibernate_ms": summary(hib_ms),
                "image_mib_per_sandbox": round(image_mib, 1),
                "workspace_volume_mib_per_sandbox": round(volume_mib, 2),
                "rss_freed_mib": round(procs_pre["rss_mib"] - procs_post["rss_mib"], 1),
                "pss_freed_mib": round(procs_pre["pss_mib"] - procs_post["pss_mib"], 1),
                "pss_freed_per_sandbox_mib": round(
                    (procs_pre["pss_mib"] - procs_post["pss_mib"]) / len(victims), 1
                ),
                "mem_available_gain_mib": round(avail_post - avail_pre, 1),
                "wake_to_first_result_ms": round(t_wake, 1),
            }
            return result
        finally:
            t0 = time.perf_counter()
            await self.destroy_all(up)
            result["destroy_all_ms"] = round(ms(time.perf_counter() - t0), 1)
            result["destroy_batch"] = DESTROY_BATCH

    # -- 8 --------------------------------------------------------------------------------

    async def _hibernated_ids(self) -> set[str]:
        async with self.m.db.read() as conn:
            rows = await conn.execute(
                sandboxes.select().where(sandboxes.c.state == SandboxState.HIBERNATED.value)
            )
            return {r.id for r in rows}

    async def hibernated(
        self, total: int, n_real: int, n_wake_clones: int, n_wake_real: int
    ) -> dict[str, Any]:
        """``total`` hibernated sandboxes held at once by the manager: ``n_real`` created and
        hibernated through it, the rest cloned from one of them (record + files), then measured,
        a sample woken through ``run_code``, and all destroyed through the manager."""
        marker = str(self.m.home / "gvisor")
        template = self.m.template("dense")
        backend_name, backend = self.m.backend_for(template)
        result: dict[str, Any] = {"target": total, "real": n_real, "cloned": total - n_real}
        made: list[str] = []
        values: dict[str, str] = {}
        procs_before = host_processes(marker)
        avail_before = mem_available_mib()
        try:
            # 1. real sample: create, give each its own interpreter state, hibernate --------------
            create_ms, hib_ms = [], []
            for i in range(n_real):
                t, rec = await timed(lambda: self.m.create(self.tenant, "dense"))
                create_ms.append(t)
                made.append(rec.id)
                values[rec.id] = f"hib-{i}-{rec.id[-6:]}"
                await self.run1(rec.id, f"x = {values[rec.id]!r}")
                t, ok = await timed(lambda rec=rec: self.m.hibernate(rec))
                assert ok, rec.id
                hib_ms.append(t)
            real_ids = list(made)
            source = await self.m._record(real_ids[0])
            assert source is not None and source.state is SandboxState.HIBERNATED and source.image_path
            await asyncio.sleep(0.5)
            procs_real = host_processes(marker)
            result["sample"] = {
                "create_ms": summary(create_ms),
                "hibernate_ms": summary(hib_ms),
                "host_processes_after_hibernating": procs_real,
            }
            print(
                f"  {n_real} real hibernated, hibernate p50 {result['sample']['hibernate_ms']['p50']:.0f} ms"
            )

            # 2. clones of one real hibernated sandbox -----------------------------------------
            src_image, src_volume = Path(source.image_path), self.m.volumes.image(source.id)
            code, _ = await _sync(Path(source.workspace))  # the mounted volume, as volumes.save does
            assert code == 0
            image_plan = await asyncio.to_thread(clone_plan, src_image)
            volume_plan = await asyncio.to_thread(clone_plan, src_volume)
            free_before = shutil.disk_usage(self.m.home).free
            need = (total - n_real) * (_dir_blocks(src_image) + _dir_blocks(src_volume))
            if free_before - need < DISK_MARGIN:
                raise RuntimeError(
                    f"cloning needs {need / 2**30:.1f} GiB and only {free_before / 2**30:.1f} GiB is free "
                    f"(keeping {DISK_MARGIN / 2**30:.0f} GiB for the other users of this disk)"
                )
            limit = asyncio.Semaphore(CLONE_PARALLEL)
            done = 0
            t_clone0 = time.perf_counter()

            async def clone_one() -> None:
                nonlocal done
                async with limit:
                    # The manager's own insert: the columns it writes, state `starting`, and the
                    # workspace path it derives from the id.
                    sid, workspace = await self.m._insert(
                        template, backend_name, self.tenant, None, {"bench_clone_of": source.id}
                    )
                    made.append(sid)
                    image = self.m.images / sid

                    def copy() -> None:
                        workspace.mkdir(parents=True, exist_ok=True)  # the (unmounted) mount point
                        clone_files(src_image, image, image_plan)
                        clone_files(src_volume, self.m.volumes.image(sid), volume_plan)

                    await asyncio.to_thread(copy)
                    await self.m._set(sid, state=SandboxState.HIBERNATED.value, image_path=str(image))
                    values[sid] = values[source.id]
                    done += 1
                    if done % PROGRESS_EVERY == 0 or done == total - n_real:
                        elapsed = time.perf_counter() - t_clone0
                        print(f"  cloned {done}/{total - n_real} ({elapsed:.1f} s, {done / elapsed:.0f}/s)")

            await asyncio.gather(*(clone_one() for _ in range(total - n_real)))
            t_clone = time.perf_counter() - t_clone0
            result["cloning"] = {
                "source": source.id,
                "parallelism": CLONE_PARALLEL,
                "seconds": round(t_clone, 1),
                "per_second": round((total - n_real) / t_clone, 1),
                "copy": "data extents copy_file_range, unwritten extents fallocate, holes kept "
                "(FIEMAP of the source, read once); record via manager._insert then _set(hibernated)",
            }

            # 3. measure with all of them present ---------------------------------------------
            hibernated = await self._hibernated_ids()
            ours = hibernated & set(made)
            assert len(ours) == total, (len(ours), total)
            await asyncio.sleep(0.5)
            procs_all = host_processes(marker)
            avail_all = mem_available_mib()
            naming = processes_naming(ours)
            t_list_runsc, present = await timed(backend.list)
            in_runsc = sorted(ours & set(present))
            mounted = {p.name for p in self.m.volumes.mounted_paths() if p.parent == self.m.workspaces}
            clones = [i for i in made if i not in set(real_ids)]

            def disk() -> dict[str, Any]:
                def per(ids: list[str]) -> tuple[list[int], list[int]]:
                    imgs = [_dir_blocks(self.m.images / i) for i in ids]
                    vols = [_dir_blocks(self.m.volumes.image(i)) for i in ids]
                    return imgs, vols

                r_img, r_vol = per(real_ids)
                c_img, c_vol = per(clones)
                everything = sum(r_img) + sum(r_vol) + sum(c_img) + sum(c_vol)
                mib = 2**20
                return {
                    "real_image_mib_per_sandbox": round(sum(r_img) / len(r_img) / mib, 2),
                    "real_volume_mib_per_sandbox": round(sum(r_vol) / len(r_vol) / mib, 2),
                    "clone_image_mib_per_sandbox": round(sum(c_img) / len(c_img) / mib, 2) if c_img else None,
                    "clone_volume_mib_per_sandbox": round(sum(c_vol) / len(c_vol) / mib, 2)
                    if c_vol
                    else None,
                    "source_image_mib": round(_dir_blocks(src_image) / mib, 2),
                    "source_volume_mib": round(_dir_blocks(src_volume) / mib, 2),
                    "per_sandbox_mib": round(everything / total / mib, 2),
                    "total_gib": round(everything / 2**30, 2),
                    "apparent_volume_size_gib_each": round(src_volume.stat().st_size / 2**30, 2),
                }

            t_disk, disk_figures = await timed(lambda: asyncio.to_thread(disk))
            free_all = shutil.disk_usage(self.m.home).free
            disk_figures |= {
                "df_used_by_clones_gib": round((free_before - free_all) / 2**30, 2),
                "df_used_per_clone_mib": round((free_before - free_all) / (total - n_real) / 2**20, 2)
                if total > n_real
                else None,
                "disk_free_gib_with_all_present": round(free_all / 2**30, 1),
                "database_files_mib": round(
                    sum(f.stat().st_size for f in self.m.home.parent.glob("warden.db*")) / 2**20, 2
                ),
                "note": "blocks on disk (st_blocks); df delta over the cloning is a cross-check that "
                "may include other writers on this shared disk",
            }
            reap_ms, list_ms, reconcile_ms = [], [], []
            for _ in range(5):
                t, _ = await timed(self.m.reap)
                reap_ms.append(t)
                t, listed = await timed(lambda: self.m.list_sandboxes(self.tenant))
                list_ms.append(t)
                assert len(listed) >= total, len(listed)
            for _ in range(3):
                t, _ = await timed(self.m.reconcile)
                reconcile_ms.append(t)
            still = await self._hibernated_ids()
            assert ours <= still, "reap/reconcile changed hibernated records"
            result["held"] = {
                "hibernated_records": len(ours),
                "listed_by_list_sandboxes": len(listed),
                "runsc_processes_for_them": len(naming),
                "runsc_list_entries_for_them": len(in_runsc),
                "runsc_list_ms": round(t_list_runsc, 1),
                "loop_mounts_held": len(mounted & ours),
                "loop_mounts_note": "the manager's hibernate leaves the workspace volume mounted (the "
                "real sample keeps theirs); clones are unmounted, as after a host reboot, and "
                "_wake mounts them",
                "host_processes_before_section": procs_before,
                "host_processes_with_all_present": procs_all,
                "host_memory_held_mib": {
                    "rss": round(procs_all["rss_mib"] - procs_before["rss_mib"], 1),
                    "pss": round(procs_all["pss_mib"] - procs_before["pss_mib"], 1),
                    "processes": procs_all["processes"] - procs_before["processes"],
                },
                "mem_available_mib_before_section": avail_before,
                "mem_available_mib_with_all_present": avail_all,
                "mem_available_note": "MemAvailable also moves with other jobs on this machine and "
                "with the page cache the copies filled",
                "disk": disk_figures,
                "disk_walk_ms": round(t_disk, 1),
                "reap_ms": summary(reap_ms),
                "list_sandboxes_ms": summary(list_ms),
                "reconcile_ms": summary(reconcile_ms),
            }
            assert not naming and not in_runsc, (naming, in_runsc)
            print(
                f"  {len(ours)} hibernated: {disk_figures['per_sandbox_mib']} MiB each, "
                f"{disk_figures['total_gib']} GiB, {len(naming)} processes; reap p50 "
                f"{result['held']['reap_ms']['p50']:.1f} ms, list p50 {result['held']['list_sandboxes_ms']['p50']:.1f} ms"
            )

            # 4. wake a random sample through run_code; each must answer ------------------------
            rng = random.Random()
            woken = rng.sample(clones, min(n_wake_clones, len(clones))) + rng.sample(
                real_ids, min(n_wake_real, len(real_ids))
            )
            wake_clone, wake_real, rehib = [], [], []
            for sid in woken:
                t, out = await timed(lambda sid=sid: self.run1(sid, "x"))
                assert out["value"] == repr(values[sid]), (sid, out["value"], values[sid])
                (wake_real if sid in real_ids else wake_clone).append(t)
            for sid in woken:
                rec = await self.m._record(sid)
                assert rec is not None and rec.state is SandboxState.RUNNING and rec.image_path is None
                t, ok = await timed(lambda rec=rec: self.m.hibernate(rec))
                assert ok
                rehib.append(t)
            back = await self._hibernated_ids()
            result["wake"] = {
                "clones_woken": len(wake_clone),
                "real_woken": len(wake_real),
                "clone_wake_to_first_result_ms": summary(wake_clone),
                "real_wake_to_first_result_ms": summary(wake_real),
                "every_one_answered_its_x": True,
                "hibernate_again_ms": summary(rehib),
                "hibernated_after_rehibernating": len(back & set(made)),
            }
            result["hibernated_held"] = len(ours)
            print(
                f"  woke {len(wake_clone)} clones (p50 {result['wake']['clone_wake_to_first_result_ms'].get('p50')} "
                f"ms) and {len(wake_real)} real ones (p50 {result['wake']['real_wake_to_first_result_ms'].get('p50')} ms)"
            )
            return result
        finally:
            # 5. destroy all through the manager --------------------------------------------------
            t0 = time.perf_counter()
            records = [r for r in [await self.m._record(i) for i in made] if r is not None]
            await self.destroy_all(records)
            result["destroy_all"] = {
                "count": len(records),
                "seconds": round(time.perf_counter() - t0, 1),
                "batch": DESTROY_BATCH,
            }
            left = {p for p in self.m.volumes.mounted_paths() if p.parent == self.m.workspaces}
            result["destroy_all"]["mounts_left"] = len({p.name for p in left} & set(made))


async def baselines(n: int, tmp: Path) -> dict[str, Any]:
    python = [await wall_of(["/usr/bin/python3", "-c", "pass"]) for _ in range(n)]
    root = tmp / "runsc-do"
    root.mkdir()
    runsc = []
    for _ in range(n):
        argv = ["runsc", f"--root={root}", "--network=none", "do", "/usr/bin/python3", "-c", "print(2)"]
        runsc.append(await wall_of(argv, expect="2"))
    return {
        "python3_c_pass_ms": summary(python),
        "runsc_do_python_print_ms": summary(runsc),
    }


async def cleanup(manager: SandboxManager, db: Database, tmp: Path, state: Path) -> dict[str, Any]:
    """Destroy whatever is left through the manager, then check runsc and the mounts."""
    async with db.read() as conn:
        rows = await conn.execute(
            sandboxes.select().where(sandboxes.c.state.in_([s.value for s in LIVE_STATES]))
        )
        left = [SandboxRecord.from_row(r) for r in rows]
    for rec in left:
        with contextlib.suppress(Exception):
            await manager._destroy(rec)
    await manager.close()
    listing = (await capture(["runsc", f"--root={state}/runsc", "list"])).strip()
    rows_left = [line for line in listing.splitlines()[1:] if line.strip()]
    mounts = await capture(["findmnt", "-rn", "-o", "TARGET"])
    mounted = [line for line in mounts.splitlines() if str(tmp) in line]
    return {
        "left_for_cleanup": len(left),
        "runsc_list_after": rows_left,
        "loop_mounts_after": mounted,
        "clean": not rows_left and not mounted,
    }


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    quick = args.quick
    n_cold, n_warm, n_rtt, n_pr, n_snap = (3, 5, 100, 3, 1) if quick else (10, 20, 500, 10, 3)
    n_warm_pre = 3 if quick else 10
    density_target = 10 if quick else DENSITY_TARGET
    density_budget = 25.0 if quick else 110.0
    pool_k = 2 if quick else 4
    n_hib, n_hib_real = (QUICK_HIBERNATED, 5) if quick else (HIBERNATED_TARGET, 20)
    n_wake = (3, 2) if quick else (10, 5)
    machine = await machine_info()
    machine["runsc"] = (await capture(["runsc", "--version"])).splitlines()[0]
    results: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    targets: list[Target] = []

    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-sbx-"))
    home = tmp / "home"
    db = Database(sqlite_url(tmp / "warden.db"))
    await upgrade(db)
    tenant = await KeyService(db).ensure_tenant("bench")
    small = SandboxLimitsConfig(memory_mb=256)
    config = SandboxConfig(
        backend="gvisor",
        templates=[
            SandboxTemplate(name="python", pool_size=pool_k, hibernate_after=None, ttl=None),
            SandboxTemplate(name="cold", pool_size=0, hibernate_after=None, ttl=None),
            SandboxTemplate(name="dense", pool_size=0, hibernate_after=None, ttl=None, limits=small),
        ],
    )
    backends = build_backends(config, home)
    if "gvisor" not in backends:
        print("runsc is not installed: nothing to measure", file=sys.stderr)
        sys.exit(1)
    manager = SandboxManager(db, config, backends, home)
    bench = Bench(manager, tenant, time.monotonic() + (80 if quick else 280))
    bench.pr_n = n_pr
    bench.reserve_s = 12.0 if quick else 45.0
    try:
        async with asyncio.timeout(160 if quick else 650):
            print(f"baselines: python3 -c pass, runsc do × {n_cold}")
            baseline.update(await baselines(n_cold, tmp))
            print(f"  {baseline}")
            print(f"1. cold create → first result × {n_cold}")
            results["cold"] = await bench.cold(n_cold)
            print(f"  {results['cold']['create_to_first_result_ms']}")
            print(f"2. warm claim → first result × {n_warm} (pool {pool_k})")
            results["warm"] = await bench.warm(n_warm, pool_k)
            print(f"  {results['warm']['claim_to_first_result_ms']}")
            print(f"2b. the same with the pool's Python contexts started beforehand (what-if) × {n_warm_pre}")
            results["warm_context_prestarted_whatif"] = await bench.warm(n_warm_pre, pool_k, prestart=True)
            print(f"  {results['warm_context_prestarted_whatif']['claim_to_first_result_ms']}")
            print(f"3./4. run_code round trip × {n_rtt}, pause/resume × {n_pr}")
            ours, base = await bench.roundtrip(n_rtt)
            results["pause_resume"] = ours.pop("pause_resume")
            results["roundtrip"] = ours
            baseline.update(base)
            print(f"  run_code {ours['manager_run_code_ms']}\n  hello {base['channel_hello_ms']}")
            print(f"  pause/resume {results['pause_resume']}")
            print(f"5./6. snapshot/restore × {n_snap} of ~100 MB, fork(4)")
            results["snapshot"] = await bench.snapshots(n_snap, 4)
            print(f"  {results['snapshot']}")
            print(f"7. density up to {density_target} (budget {density_budget:.0f} s)")
            results["density"] = await bench.density(density_target, density_budget)
            print(f"  running {results['density']['running']}: {results['density']['stopped_by']}")
            print(f"8. {n_hib} hibernated sandboxes held at once ({n_hib_real} real, the rest cloned)")
            try:
                results["hibernated"] = await bench.hibernated(n_hib, n_hib_real, n_wake[0], n_wake[1])
            except Exception as exc:  # keep the other sections' figures
                results["hibernated"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                print(f"  failed: {results['hibernated']['error']}", file=sys.stderr)
    except TimeoutError:
        results["aborted"] = "the run's overall time limit was hit; later sections are missing"
        print(results["aborted"], file=sys.stderr)
    finally:
        results["cleanup"] = await cleanup(manager, db, tmp, home / "gvisor")
        await db.dispose()
        if results["cleanup"]["clean"]:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"left behind, see {tmp}: {results['cleanup']}", file=sys.stderr)

    if "cold" in results:
        cold = results["cold"]["create_to_first_result_ms"]["p50"]
        results["cold"]["vs_runsc_do_p50_ratio"] = ratio(cold, baseline["runsc_do_python_print_ms"]["p50"])
        results["cold"]["vs_python_p50_ratio"] = ratio(cold, baseline["python3_c_pass_ms"]["p50"])
    warm = results.get("warm", {}).get("claim_to_first_result_ms", {}).get("p50")
    targets.append(Target("warm claim → first result p50", warm, WARM_TARGET_MS, "ms"))
    rtt = results.get("roundtrip", {}).get("manager_run_code_ms", {}).get("p50")
    targets.append(Target("run_code round trip p50", rtt, ROUNDTRIP_TARGET_MS, "ms"))
    running = results.get("density", {}).get("running")
    targets.append(Target("idle running sandboxes", running, density_target, "sandboxes", op=">="))
    held = results.get("hibernated", {}).get("hibernated_held")
    label = "hibernated sandboxes held at once, sample woken"
    if quick:
        label += f" (quick mode: {QUICK_HIBERNATED} only, not the full count)"
    targets.append(Target(label, held, HIBERNATED_TARGET, "sandboxes", op=">="))
    return write_result(
        NAME,
        machine=machine,
        method=__doc__,
        results=results,
        baseline=baseline,
        targets=targets,
        quick=quick,
        began=began,
    )


if __name__ == "__main__":
    run(main, parser("Sandbox latency, snapshots and density (gVisor)").parse_args())
