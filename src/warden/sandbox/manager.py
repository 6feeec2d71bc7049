"""The SandboxManager: creates sandboxes (claimed from warm pools when it can), keeps their
state in the database, resumes paused and hibernated ones transparently on use, snapshots,
restores and forks them, hibernates idle ones, reaps expired ones, and after a restart
re-adopts what is still running and removes what nobody owns."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, select, update

from warden.config import SandboxConfig, SandboxTemplate
from warden.errors import Conflict, InvalidInput, NotFound
from warden.ids import new_id
from warden.netpolicy import EgressPolicy
from warden.sandbox.backend import BackendState, SandboxBackend, SandboxError
from warden.sandbox.channel import GuestChannel
from warden.sandbox.egress import EgressProxy
from warden.sandbox.guest.tunnel import Tunnel, TunnelError
from warden.sandbox.spec import NetworkPolicy, ResourceLimits, SandboxSpec
from warden.sandbox.workspace import WorkspaceVolumes
from warden.store.database import Database, wall_clock
from warden.store.schema import sandboxes, snapshots

log = logging.getLogger("warden.sandbox")

OutputCallback = Callable[[str, str], Awaitable[None]]
"""Receives (stream name, text) as user code prints."""


class SandboxState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    HIBERNATED = "hibernated"
    DESTROYED = "destroyed"
    FAILED = "failed"


EGRESS_ATTACH_TIMEOUT = 10.0
"""How long a (re)started sandbox's first use waits for its egress relay to listen."""
TOUCH_EVERY = 5.0
"""Seconds between `last_used_at` writes of one sandbox (idle and TTL clocks are coarser)."""

LIVE_STATES = (SandboxState.STARTING, SandboxState.RUNNING, SandboxState.PAUSED, SandboxState.HIBERNATED)


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    id: str
    tenant_id: str | None
    """None while the sandbox waits in a warm pool."""
    session_id: str | None
    template: str
    backend: str
    state: SandboxState
    workspace: str
    image_path: str | None
    metadata: dict[str, Any]
    created_at: float
    last_used_at: float
    expires_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> SandboxRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            tenant_id=m["tenant_id"],
            session_id=m["session_id"],
            template=m["template"],
            backend=m["backend"],
            state=SandboxState(m["state"]),
            workspace=m["workspace"],
            image_path=m["image_path"],
            metadata=m["metadata"] or {},
            created_at=m["created_at"],
            last_used_at=m["last_used_at"],
            expires_at=m["expires_at"],
        )


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    id: str
    sandbox_id: str
    tenant_id: str
    template: str
    image_path: str
    workspace_copy: str
    size_bytes: int
    created_at: float


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def _dir_size(path: Path) -> int:
    """Bytes on disk (blocks, so sparse volume images count what they hold)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class SandboxManager:
    def __init__(
        self, db: Database, config: SandboxConfig, backends: dict[str, SandboxBackend], home: Path
    ) -> None:
        self.db = db
        self.config = config
        self.backends = backends
        self.home = home
        self.workspaces = home / "workspaces"
        self.images = home / "images"
        self.snapshot_dir = home / "snapshots"
        for folder in (self.workspaces, self.images, self.snapshot_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.volumes = WorkspaceVolumes(home)
        self._channels: dict[str, GuestChannel] = {}
        self._egress: dict[str, asyncio.Task[None]] = {}
        """Per sandbox with egress on: the task serving its tunnel through the egress proxy."""
        self._egress_ready: dict[str, asyncio.Event] = {}
        """Set while the sandbox's relay is attached and listening."""
        self._egress_policies: dict[str, EgressPolicy] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._touched: dict[str, float] = {}
        self._background: list[asyncio.Task[None]] = []
        self._pool_wakeup = asyncio.Event()

    # -- set-up ----------------------------------------------------------------------------

    def template(self, name: str | None) -> SandboxTemplate:
        chosen = self.config.template(name or self.config.default_template)
        if chosen is None:
            known = ", ".join(t.name for t in self.config.templates)
            raise NotFound(f"no sandbox template {name!r}; templates: {known}", code="template_not_found")
        return chosen

    def backend_for(self, template: SandboxTemplate) -> tuple[str, SandboxBackend]:
        name: str = template.backend or next(iter(self.backends.keys()))
        backend = self.backends.get(name)
        if backend is None:
            raise SandboxError(
                f"sandbox backend {name!r} is not available on this host", code="backend_unavailable"
            )
        return name, backend

    def spec(self, template: SandboxTemplate, sandbox_id: str, workspace: Path) -> SandboxSpec:
        limits = template.limits
        return SandboxSpec(
            sandbox_id=sandbox_id,
            workspace=workspace,
            limits=ResourceLimits(
                cpus=limits.cpus,
                memory_mb=limits.memory_mb,
                pids=limits.pids,
                disk_mb=limits.disk_mb,
                output_bytes=limits.output_bytes,
                timeout=limits.timeout,
            ),
            network=NetworkPolicy(egress=template.network.egress),
            env=dict(template.env),
        )

    async def start(self) -> None:
        """Re-adopt sandboxes after a restart, then start the pool filler and the reaper."""
        await self.reconcile()
        self._background.append(asyncio.create_task(self._fill_pools_forever(), name="sandbox-pools"))
        self._background.append(asyncio.create_task(self._reap_forever(), name="sandbox-reaper"))

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        for sandbox_id in list(self._channels) + list(self._egress):
            await self._disconnect(sandbox_id)

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- records ---------------------------------------------------------------------------

    async def _record(self, sandbox_id: str) -> SandboxRecord | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(sandboxes).where(sandboxes.c.id == sandbox_id))).first()
        return SandboxRecord.from_row(row) if row is not None else None

    async def get(self, tenant_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self._record(sandbox_id)
        if record is None or record.tenant_id != tenant_id or record.state is SandboxState.DESTROYED:
            raise NotFound(f"no sandbox {sandbox_id!r}", code="sandbox_not_found")
        return record

    async def list_sandboxes(self, tenant_id: str) -> list[SandboxRecord]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(sandboxes)
                .where(sandboxes.c.tenant_id == tenant_id, sandboxes.c.state != SandboxState.DESTROYED.value)
                .order_by(sandboxes.c.created_at.desc())
            )
            return [SandboxRecord.from_row(r) for r in rows]

    async def _set(self, sandbox_id: str, **values: Any) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(update(sandboxes).where(sandboxes.c.id == sandbox_id).values(**values))

    async def _touch(self, record: SandboxRecord) -> None:
        """Record use for idle hibernation and TTL; at most once per few seconds per sandbox,
        because a write transaction per call would cost more than the call itself."""
        now = wall_clock()
        if now - self._touched.get(record.id, 0.0) < TOUCH_EVERY:
            return
        self._touched[record.id] = now
        template = self.config.template(record.template)
        ttl = template.ttl if template is not None else None
        await self._set(record.id, last_used_at=now, expires_at=now + ttl if ttl else None)

    # -- create, claim, destroy ------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        template_name: str | None = None,
        *,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SandboxRecord:
        """A sandbox for the tenant: a warm one from the pool when there is one, else a cold start."""
        template = self.template(template_name)
        claimed = await self._claim(tenant_id, template.name, session_id, metadata or {})
        if claimed is not None:
            self._pool_wakeup.set()
            return claimed
        return await self._cold_create(template, tenant_id, session_id, metadata or {})

    async def _claim(
        self, tenant_id: str, template: str, session_id: str | None, metadata: dict[str, Any]
    ) -> SandboxRecord | None:
        candidate = (
            select(sandboxes.c.id)
            .where(
                sandboxes.c.tenant_id.is_(None),
                sandboxes.c.template == template,
                sandboxes.c.state == SandboxState.RUNNING.value,
            )
            .order_by(sandboxes.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        now = wall_clock()
        tpl = self.config.template(template)
        async with self.db.transaction() as conn:
            found = (await conn.execute(candidate)).first()
            if found is None:
                return None
            row = (
                await conn.execute(
                    update(sandboxes)
                    .where(sandboxes.c.id == found.id, sandboxes.c.tenant_id.is_(None))
                    .values(
                        tenant_id=tenant_id,
                        session_id=session_id,
                        metadata=metadata,
                        last_used_at=now,
                        expires_at=now + tpl.ttl if tpl is not None and tpl.ttl else None,
                    )
                    .returning(*sandboxes.c)
                )
            ).first()
        return SandboxRecord.from_row(row) if row is not None else None

    async def _insert(
        self,
        template: SandboxTemplate,
        backend_name: str,
        tenant_id: str | None,
        session_id: str | None,
        metadata: dict[str, Any],
    ) -> tuple[str, Path]:
        """Record a new sandbox as starting, before any backend work, so a crash mid-start
        leaves a row that `reconcile` can clean up."""
        sandbox_id = new_id("sbx")
        workspace = self.workspaces / sandbox_id
        now = wall_clock()
        async with self.db.transaction() as conn:
            await conn.execute(
                insert(sandboxes).values(
                    id=sandbox_id,
                    tenant_id=tenant_id,
                    session_id=session_id,
                    template=template.name,
                    backend=backend_name,
                    state=SandboxState.STARTING.value,
                    workspace=str(workspace),
                    metadata=metadata,
                    created_at=now,
                    last_used_at=now,
                    expires_at=now + template.ttl if template.ttl else None,
                )
            )
        return sandbox_id, workspace

    async def _cold_create(
        self,
        template: SandboxTemplate,
        tenant_id: str | None,
        session_id: str | None,
        metadata: dict[str, Any],
    ) -> SandboxRecord:
        backend_name, backend = self.backend_for(template)
        sandbox_id, workspace = await self._insert(template, backend_name, tenant_id, session_id, metadata)
        try:
            await self.volumes.create(sandbox_id, workspace, template.limits.disk_mb)
            await backend.create(self.spec(template, sandbox_id, workspace))
        except BaseException:
            await self._set(sandbox_id, state=SandboxState.FAILED.value)
            with contextlib.suppress(Exception):
                await backend.destroy(sandbox_id)
            with contextlib.suppress(Exception):
                await self.volumes.destroy(sandbox_id, workspace)
            raise
        await self._set(sandbox_id, state=SandboxState.RUNNING.value)
        record = await self._record(sandbox_id)
        assert record is not None
        return record

    async def destroy(self, tenant_id: str, sandbox_id: str) -> None:
        record = await self.get(tenant_id, sandbox_id)
        await self._destroy(record)

    async def _destroy(self, record: SandboxRecord) -> None:
        async with self._lock(record.id):
            await self._disconnect(record.id)
            backend = self.backends.get(record.backend)
            if backend is not None:
                await backend.destroy(record.id)
            await self._set(record.id, state=SandboxState.DESTROYED.value, image_path=None)
            await self.volumes.destroy(record.id, Path(record.workspace))
            if record.image_path:
                await asyncio.to_thread(shutil.rmtree, record.image_path, True)
        self._locks.pop(record.id, None)
        self._touched.pop(record.id, None)

    # -- keeping it running ----------------------------------------------------------------

    async def _ready(self, record: SandboxRecord) -> GuestChannel:
        """Resume or restore the sandbox if needed and return a channel to its supervisor."""
        if record.state in (SandboxState.DESTROYED, SandboxState.FAILED):
            raise Conflict(f"sandbox {record.id} is {record.state.value}", code="sandbox_unavailable")
        channel = self._channels.get(record.id)
        if channel is not None and record.state is SandboxState.RUNNING and not channel.closed:
            self._ensure_egress(record)
            return channel
        async with self._lock(record.id):
            current = await self._record(record.id)
            assert current is not None
            backend = self.backends[current.backend]
            if current.state is SandboxState.PAUSED:
                await backend.resume(current.id)
                await self._set(current.id, state=SandboxState.RUNNING.value)
            elif current.state is SandboxState.HIBERNATED or (
                current.state is SandboxState.RUNNING
                and await backend.state(current.id) in (BackendState.MISSING, BackendState.STOPPED)
            ):
                # Hibernated, or died (a fork bomb starving the sentry, a host reboot): start
                # it again from its image if it has one, else fresh on its workspace.
                await self._wake(current, backend)
            channel = self._channels.get(current.id)
            if channel is None or channel.closed:
                channel = GuestChannel(await backend.connect(current.id))
                self._channels[current.id] = channel
            if self._ensure_egress(current):
                # Just (re)started: programs must find the proxy port on their first request.
                try:
                    async with asyncio.timeout(EGRESS_ATTACH_TIMEOUT):
                        await self._egress_ready[current.id].wait()
                except TimeoutError:
                    log.warning(
                        "sandbox %s: egress relay not attached after %ss", current.id, EGRESS_ATTACH_TIMEOUT
                    )
            return channel

    async def _disconnect(self, sandbox_id: str) -> None:
        """Close the control channel and the egress tunnel (before a checkpoint or removal)."""
        channel = self._channels.pop(sandbox_id, None)
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.aclose()
        self._egress_ready.pop(sandbox_id, None)
        task = self._egress.pop(sandbox_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- egress ----------------------------------------------------------------------------

    def _ensure_egress(self, record: SandboxRecord) -> bool:
        """Serve the sandbox's egress tunnel while it runs, when its template allows egress;
        True when this call started serving it."""
        running = self._egress.get(record.id)
        if running is not None and not running.done():
            return False
        policy = self._egress_policy(record.template)
        if policy is None:
            return False
        self._egress_ready[record.id] = asyncio.Event()
        self._egress[record.id] = asyncio.get_running_loop().create_task(
            self._serve_egress(record.id, self.backends[record.backend], policy), name=f"egress-{record.id}"
        )
        return True

    def _egress_policy(self, template_name: str) -> EgressPolicy | None:
        policy = self._egress_policies.get(template_name)
        if policy is None:
            template = self.config.template(template_name)
            if template is None or not template.network.egress:
                return None
            network = template.network
            policy = EgressPolicy.from_config(network.allow, network.ports, network.hosts)
            self._egress_policies[template_name] = policy
        return policy

    async def _serve_egress(self, sandbox_id: str, backend: SandboxBackend, policy: EgressPolicy) -> None:
        """Attach to the guest's relay and proxy its connections; re-attach (with back-off)
        while the sandbox runs, for the relay outlives a broken bridge."""
        loop = asyncio.get_running_loop()
        backoff = 0.2
        proxy = EgressProxy(policy, sandbox_id)
        while True:
            began = loop.time()
            try:
                stream = await backend.connect(sandbox_id, "egress")
            except SandboxError as exc:
                log.debug("egress tunnel of %s: %s", sandbox_id, exc)
            else:
                tunnel = Tunnel(stream.reader, stream.writer, accept=proxy.serve)
                ready = self._egress_ready.setdefault(sandbox_id, asyncio.Event())
                relay_ready = asyncio.ensure_future(_set_when(tunnel.ready, ready))
                try:
                    await tunnel.run()
                except TunnelError as exc:
                    log.warning("sandbox %s broke its egress tunnel: %s", sandbox_id, exc)
                finally:
                    relay_ready.cancel()
                    ready.clear()
                    # Closing our end makes the guest stop listening and abort its relayed
                    # connections before it closes its own; stream.close() waits for that.
                    await tunnel.aclose()
                    await stream.close()
            if loop.time() - began > 10:
                backoff = 0.2
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            record = await self._record(sandbox_id)
            if record is None or record.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
                return

    async def _wake(self, record: SandboxRecord, backend: SandboxBackend) -> None:
        template = self.template(record.template)
        spec = self.spec(template, record.id, Path(record.workspace))
        image = Path(record.image_path) if record.image_path else None
        await backend.destroy(record.id)
        await self.volumes.mount(record.id, Path(record.workspace))
        if image is not None and image.is_dir() and backend.supports_snapshots:
            await backend.restore(spec, image)
        else:
            # Nothing to restore from (a host reboot, or a backend without snapshots): the
            # workspace files survive, interpreter state does not.
            await backend.create(spec)
            log.warning("sandbox %s was restarted without its memory state", record.id)
        await self._set(record.id, state=SandboxState.RUNNING.value, image_path=None)
        if image is not None:
            await asyncio.to_thread(shutil.rmtree, image, True)

    async def pause(self, tenant_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self.get(tenant_id, sandbox_id)
        async with self._lock(record.id):
            if record.state is SandboxState.RUNNING:
                await self.backends[record.backend].pause(record.id)
                await self._set(record.id, state=SandboxState.PAUSED.value)
        return await self.get(tenant_id, sandbox_id)

    async def resume(self, tenant_id: str, sandbox_id: str) -> SandboxRecord:
        record = await self.get(tenant_id, sandbox_id)
        await self._ready(record)
        await self._touch(record)
        return await self.get(tenant_id, sandbox_id)

    async def hibernate(self, record: SandboxRecord) -> bool:
        """Checkpoint to disk and free the memory; False when the backend cannot."""
        backend = self.backends[record.backend]
        if not backend.supports_snapshots:
            return False
        async with self._lock(record.id):
            current = await self._record(record.id)
            if current is None or current.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
                return False
            await self._disconnect(record.id)
            if current.state is SandboxState.PAUSED:
                await backend.resume(record.id)
            image = self.images / record.id
            await asyncio.to_thread(shutil.rmtree, image, True)
            await backend.checkpoint(record.id, image)
            await backend.destroy(record.id)
            # A hibernated sandbox holds no loop device or mount either; waking mounts it again.
            await self.volumes.unmount(Path(current.workspace))
            await self._set(record.id, state=SandboxState.HIBERNATED.value, image_path=str(image))
        return True

    # -- snapshots and forks ---------------------------------------------------------------

    async def create_snapshot(self, tenant_id: str, sandbox_id: str) -> SnapshotRecord:
        record = await self.get(tenant_id, sandbox_id)
        backend = self.backends[record.backend]
        if not backend.supports_snapshots:
            raise SandboxError(f"the {record.backend} backend cannot snapshot memory", code="not_supported")
        await self._ready(record)
        snapshot_id = new_id("snap")
        folder = self.snapshot_dir / snapshot_id
        image, workspace_copy = folder / "image", folder / "workspace"
        async with self._lock(record.id):
            await self._disconnect(record.id)
            await backend.checkpoint(record.id, image)
            try:
                # The sandbox is stopped, so the copy of its files matches its memory image.
                await self.volumes.save(record.id, Path(record.workspace), workspace_copy)
            finally:
                await backend.destroy(record.id)
                template = self.template(record.template)
                await backend.restore(self.spec(template, record.id, Path(record.workspace)), image)
        size = await asyncio.to_thread(_dir_size, folder)
        snap = SnapshotRecord(
            snapshot_id,
            record.id,
            tenant_id,
            record.template,
            str(image),
            str(workspace_copy),
            size,
            wall_clock(),
        )
        async with self.db.transaction() as conn:
            await conn.execute(
                insert(snapshots).values(
                    id=snap.id,
                    sandbox_id=snap.sandbox_id,
                    tenant_id=tenant_id,
                    template=snap.template,
                    image_path=snap.image_path,
                    workspace_copy=snap.workspace_copy,
                    size_bytes=size,
                    created_at=snap.created_at,
                )
            )
        await self._touch(record)
        return snap

    async def snapshot(self, tenant_id: str, snapshot_id: str) -> SnapshotRecord:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(snapshots).where(snapshots.c.id == snapshot_id, snapshots.c.tenant_id == tenant_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"no snapshot {snapshot_id!r}", code="snapshot_not_found")
        m = row._mapping
        return SnapshotRecord(
            m["id"], m["sandbox_id"], m["tenant_id"], m["template"], m["image_path"], m["workspace_copy"],
            m["size_bytes"], m["created_at"],
        )  # fmt: skip

    async def list_snapshots(self, tenant_id: str, sandbox_id: str | None = None) -> list[SnapshotRecord]:
        query = select(snapshots.c.id).where(snapshots.c.tenant_id == tenant_id)
        if sandbox_id is not None:
            query = query.where(snapshots.c.sandbox_id == sandbox_id)
        async with self.db.read() as conn:
            ids = [r.id for r in await conn.execute(query.order_by(snapshots.c.created_at.desc()))]
        return [await self.snapshot(tenant_id, i) for i in ids]

    async def restore(
        self, tenant_id: str, snapshot_id: str, *, session_id: str | None = None
    ) -> SandboxRecord:
        """A new sandbox that continues from the snapshot: its memory and its files."""
        snap = await self.snapshot(tenant_id, snapshot_id)
        template = self.template(snap.template)
        backend_name, backend = self.backend_for(template)
        sandbox_id, workspace = await self._insert(
            template, backend_name, tenant_id, session_id, {"restored_from": snapshot_id}
        )
        await self.volumes.load(Path(snap.workspace_copy), sandbox_id, workspace)
        try:
            await backend.restore(self.spec(template, sandbox_id, workspace), Path(snap.image_path))
        except BaseException:
            await self._set(sandbox_id, state=SandboxState.FAILED.value)
            raise
        await self._set(sandbox_id, state=SandboxState.RUNNING.value)
        return await self.get(tenant_id, sandbox_id)

    async def fork(self, tenant_id: str, sandbox_id: str, count: int) -> list[SandboxRecord]:
        """``count`` new sandboxes, each continuing from this one's present state."""
        if not 1 <= count <= 64:
            raise InvalidInput("fork between 1 and 64 copies at a time", code="invalid_count")
        snap = await self.create_snapshot(tenant_id, sandbox_id)
        return list(await asyncio.gather(*(self.restore(tenant_id, snap.id) for _ in range(count))))

    # -- using it --------------------------------------------------------------------------

    async def _use(self, tenant_id: str, sandbox_id: str) -> tuple[SandboxRecord, GuestChannel]:
        record = await self.get(tenant_id, sandbox_id)
        channel = await self._ready(record)
        await self._touch(record)
        return record, channel

    async def _run(
        self, tenant_id: str, sandbox_id: str, op: str, on_output: OutputCallback | None, **args: Any
    ) -> dict[str, Any]:
        """Send a streaming request (`run_code`, `command_run`); pass its output on as it comes
        and return the result with the whole stdout and stderr."""
        record, channel = await self._use(tenant_id, sandbox_id)
        args["timeout"] = args.get("timeout") or self.template(record.template).limits.timeout
        streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
        final: dict[str, Any] = {}
        async for message in channel.request(op, **args):
            kind = message.get("type")
            if kind in streams:
                text = message.get("text", "")
                streams[kind].append(text)
                if on_output is not None:
                    await on_output(kind, text)
            else:
                final = {k: v for k, v in message.items() if k not in ("type", "id")}
        return {"stdout": "".join(streams["stdout"]), "stderr": "".join(streams["stderr"]), **final}

    async def run_code(
        self,
        tenant_id: str,
        sandbox_id: str,
        code: str,
        *,
        context: str = "default",
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> dict[str, Any]:
        return await self._run(
            tenant_id, sandbox_id, "run_code", on_output, code=code, context=context, timeout=timeout
        )

    async def run_command(
        self,
        tenant_id: str,
        sandbox_id: str,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str = "/workspace",
        background: bool = False,
        on_output: OutputCallback | None = None,
    ) -> dict[str, Any]:
        return await self._run(
            tenant_id,
            sandbox_id,
            "command_run",
            on_output,
            cmd=cmd,
            timeout=timeout,
            env=env or {},
            cwd=cwd,
            background=background,
        )

    async def guest_call(self, tenant_id: str, sandbox_id: str, op: str, **args: Any) -> dict[str, Any]:
        """One request to the supervisor (files, contexts, kill)."""
        _, channel = await self._use(tenant_id, sandbox_id)
        result = await channel.call(op, **args)
        result.pop("type", None)
        result.pop("id", None)
        return result

    async def read_file(
        self, tenant_id: str, sandbox_id: str, path: str, max_bytes: int = 10 * 2**20
    ) -> bytes:
        result = await self.guest_call(tenant_id, sandbox_id, "file_read", path=path, max_bytes=max_bytes)
        return base64.b64decode(result["data"])

    async def write_file(self, tenant_id: str, sandbox_id: str, path: str, data: bytes) -> int:
        encoded = base64.b64encode(data).decode()
        result = await self.guest_call(tenant_id, sandbox_id, "file_write", path=path, data=encoded)
        return int(result.get("size", len(data)))

    async def for_session(
        self, tenant_id: str, session_id: str, template: str | None = None
    ) -> SandboxRecord:
        """The session's sandbox, claimed on first use (invariant 5: one per session)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(sandboxes).where(
                        sandboxes.c.session_id == session_id,
                        sandboxes.c.tenant_id == tenant_id,
                        sandboxes.c.state.in_([s.value for s in LIVE_STATES]),
                    )
                )
            ).first()
        if row is not None:
            return SandboxRecord.from_row(row)
        async with self._lock(f"session:{session_id}"):
            async with self.db.read() as conn:
                row = (
                    await conn.execute(
                        select(sandboxes).where(
                            sandboxes.c.session_id == session_id,
                            sandboxes.c.state.in_([s.value for s in LIVE_STATES]),
                        )
                    )
                ).first()
            if row is not None:
                return SandboxRecord.from_row(row)
            return await self.create(tenant_id, template, session_id=session_id)

    # -- pools, reaping, re-adoption -------------------------------------------------------

    async def fill_pools(self) -> int:
        """Start sandboxes until every template's pool is full; returns how many started."""
        started = 0
        for template in self.config.templates:
            if template.pool_size <= 0:
                continue
            async with self.db.read() as conn:
                pooled = (
                    await conn.execute(
                        select(sandboxes.c.id).where(
                            sandboxes.c.tenant_id.is_(None),
                            sandboxes.c.template == template.name,
                            sandboxes.c.state.in_([SandboxState.STARTING.value, SandboxState.RUNNING.value]),
                        )
                    )
                ).all()
            for _ in range(template.pool_size - len(pooled)):
                record = await self._cold_create(template, None, None, {"pooled": True})
                # Open the channel and start the default interpreter now, so a claim's first
                # run_code pays for neither.
                with contextlib.suppress(Exception):
                    channel = await self._ready(record)
                    await channel.call("run_code", code="None", context="default", timeout=60)
                started += 1
        return started

    async def _fill_pools_forever(self) -> None:
        while True:
            try:
                await self.fill_pools()
            except Exception:
                log.exception("filling sandbox pools failed")
            self._pool_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._pool_wakeup.wait()

    async def reap(self) -> None:
        """Destroy expired sandboxes; hibernate idle ones."""
        now = wall_clock()
        async with self.db.read() as conn:
            expired = [
                SandboxRecord.from_row(r)
                for r in await conn.execute(
                    select(sandboxes).where(
                        sandboxes.c.state.in_([s.value for s in LIVE_STATES]),
                        sandboxes.c.tenant_id.is_not(None),
                        sandboxes.c.expires_at.is_not(None),
                        sandboxes.c.expires_at < now,
                    )
                )
            ]
            running = [
                SandboxRecord.from_row(r)
                for r in await conn.execute(
                    select(sandboxes).where(
                        and_(
                            sandboxes.c.state.in_([SandboxState.RUNNING.value, SandboxState.PAUSED.value]),
                            sandboxes.c.tenant_id.is_not(None),
                        )
                    )
                )
            ]
        for record in expired:
            log.info("sandbox %s expired", record.id)
            await self._destroy(record)
        for record in running:
            template = self.config.template(record.template)
            if template is None or template.hibernate_after is None:
                continue
            if now - record.last_used_at > template.hibernate_after and record.id not in {
                e.id for e in expired
            }:
                with contextlib.suppress(Exception):
                    if await self.hibernate(record):
                        log.info(
                            "sandbox %s hibernated after %.0f s idle", record.id, now - record.last_used_at
                        )

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                await self.reap()
            except Exception:
                log.exception("reaping sandboxes failed")

    async def reconcile(self) -> None:
        """Match the database with what each backend runs: re-adopt the living, mark the lost,
        and remove sandboxes no record owns (so no runsc process or mount leaks)."""
        async with self.db.read() as conn:
            rows = [
                SandboxRecord.from_row(r)
                for r in await conn.execute(
                    select(sandboxes).where(sandboxes.c.state.in_([s.value for s in LIVE_STATES]))
                )
            ]
        known = {r.id: r for r in rows}
        for name, backend in self.backends.items():
            present = await backend.list()
            for sandbox_id, state in present.items():
                record = known.get(sandbox_id)
                if record is None or record.backend != name:
                    log.warning("removing sandbox %s that no record owns", sandbox_id)
                    await backend.destroy(sandbox_id)
                elif state is BackendState.STOPPED:
                    await backend.destroy(sandbox_id)
            for record in rows:
                if record.backend != name:
                    continue
                state = present.get(record.id, BackendState.MISSING)
                if record.state is SandboxState.STARTING:
                    # Another process may be starting it right now; only a stale start is dead.
                    if wall_clock() - record.created_at > 120:
                        await backend.destroy(record.id)
                        await self._set(record.id, state=SandboxState.FAILED.value)
                elif record.state in (SandboxState.RUNNING, SandboxState.PAUSED) and state in (
                    BackendState.MISSING,
                    BackendState.STOPPED,
                ):
                    if record.tenant_id is None:
                        await self._set(record.id, state=SandboxState.DESTROYED.value)
                    else:
                        # Restarted on next use (from its image if it has one).
                        await self._set(record.id, state=SandboxState.HIBERNATED.value)
                elif record.state is SandboxState.PAUSED and state is BackendState.RUNNING:
                    await self._set(record.id, state=SandboxState.RUNNING.value)
                elif record.state is SandboxState.RUNNING and state is BackendState.PAUSED:
                    await self._set(record.id, state=SandboxState.PAUSED.value)
