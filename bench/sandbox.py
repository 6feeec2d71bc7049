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
   (checkpoint to disk, sandbox stopped): image size per sandbox and memory freed. The 1,000
   hibernated figure is extrapolated (count x image + workspace volume on disk), not created.

    python -m bench.sandbox [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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
BIG_CODE = "x = [bytes(1024) for _ in range(100_000)]"
SIZE_CODE = "import sys; sum(map(sys.getsizeof, x)) + sys.getsizeof(x)"
DESTROY_BATCH = 8


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
            free = shutil.disk_usage(self.m.home).free
            per_disk = (sum(image_bytes) + sum(volume_bytes)) / len(victims)
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
            result["hibernated_1000_extrapolated"] = {
                "extrapolated": True,
                "disk_gib_for_1000": round(1000 * per_disk / 2**30, 2),
                "disk_free_gib": round(free / 2**30, 1),
                "capacity_on_free_disk": int(free // per_disk) if per_disk else None,
                "note": "1,000 × (memory image + workspace volume blocks) of the hibernated sandboxes "
                "measured here; 1,000 were not created; hibernated sandboxes hold no host memory",
            }
            return result
        finally:
            t0 = time.perf_counter()
            await self.destroy_all(up)
            result["destroy_all_ms"] = round(ms(time.perf_counter() - t0), 1)
            result["destroy_batch"] = DESTROY_BATCH


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
        async with asyncio.timeout(85 if quick else 290):
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
    capacity = results.get("density", {}).get("hibernated_1000_extrapolated", {}).get("capacity_on_free_disk")
    targets.append(
        Target(
            "hibernated sandboxes (extrapolated from disk)", capacity, HIBERNATED_TARGET, "sandboxes", op=">="
        )
    )
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
