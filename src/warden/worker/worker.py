"""The worker: leases tasks up to its concurrency, runs each in the agent loop, heartbeats its
leases, honours cancel requests within a fraction of a second, and on shutdown stops leasing,
lets running tool calls finish within a grace period and gives its tasks back to the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from warden.agent.loop import AgentLoop, Phase, TaskInput
from warden.errors import ConfigError, LimitExceeded, ModelError, NotFound, StorageError, WardenError
from warden.ids import new_id
from warden.models.base import Message
from warden.queue.lease import Lease, LeaseLost
from warden.store.tasks import TaskStatus
from warden.telemetry.genai import TracedProvider, traced_tools
from warden.telemetry.logs import bind_task
from warden.telemetry.tracing import invoke_agent_span

if TYPE_CHECKING:
    from warden.runtime import Runtime

log = logging.getLogger("warden.worker")


class StopReason(StrEnum):
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease_lost"


@dataclass
class _Running:
    lease: Lease
    started: float = field(default_factory=time.monotonic)
    loop: AgentLoop | None = None
    inner: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.inner is not None and not self.inner.done():
            self.inner.cancel()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"


class Worker:
    def __init__(
        self, runtime: Runtime, *, concurrency: int | None = None, worker_id: str | None = None
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config.worker
        self.concurrency = concurrency or self.config.concurrency
        self.id = worker_id or default_worker_id()
        self._running: dict[str, _Running] = {}
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._drained = asyncio.Event()
        """Set whenever no task is running here."""
        self._drained.set()
        runtime.bus.on_cancel(self._on_cancel_signal)

    @property
    def running_task_ids(self) -> list[str]:
        return list(self._running)

    def request_stop(self) -> None:
        """Stop leasing and begin the graceful shutdown (what SIGTERM does)."""
        self._stopping.set()
        self.runtime.bus.notify_work(local=True)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _on_cancel_signal(self, task_id: str) -> None:
        running = self._running.get(task_id)
        if running is not None:
            running.stop(StopReason.CANCEL)

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        # Before leasing: a task's first step should not wait for the language model to load.
        await self.runtime.load_pii()
        try:
            async with asyncio.TaskGroup() as group:
                background = [
                    group.create_task(self._every(self.config.heartbeat_every, self._heartbeat)),
                    group.create_task(self._every(self.config.cancel_poll_interval, self._poll_cancels)),
                    group.create_task(self._every(self.config.reap_interval, self._reap)),
                ]
                retention = self.runtime.config.retention
                if retention.enabled:
                    background.append(group.create_task(self._every(retention.interval, self._prune)))
                await self._lease_loop(group)
                await self._shutdown()
                for t in background:
                    t.cancel()
        finally:
            self._stopped.set()
            log.info("worker %s stopped", self.id)

    async def _lease_loop(self, group: asyncio.TaskGroup) -> None:
        queue = self.runtime.queue
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            leases: list[Lease] = []
            if free > 0:
                try:
                    leases = await queue.lease(self.id, free)
                except (StorageError, OSError) as exc:
                    log.warning("leasing failed: %s", exc)
                except Exception:
                    log.exception("leasing failed")
                for lease in leases:
                    self._drained.clear()
                    running = _Running(lease)
                    self._running[lease.task_id] = running
                    group.create_task(self._run_lease(running), name=f"task:{lease.task_id}")
            if leases and len(leases) == free:
                continue
            await self.runtime.bus.wait_for_work(self.config.poll_interval)

    async def _every(self, interval: float, action: object) -> None:
        assert callable(action)
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except (StorageError, OSError) as exc:
                log.warning("%s failed: %s", getattr(action, "__name__", "periodic task"), exc)
            except Exception:
                log.exception("%s failed", getattr(action, "__name__", "periodic task"))

    async def _heartbeat(self) -> None:
        leases = [r.lease for r in self._running.values()]
        if not leases:
            return
        held = await self.runtime.queue.heartbeat(leases)
        for lease in leases:
            if lease.task_id not in held and lease.task_id in self._running:
                log.warning("lost the lease on task %s", lease.task_id)
                self._running[lease.task_id].stop(StopReason.LEASE_LOST)

    async def _poll_cancels(self) -> None:
        if not self._running:
            return
        for task_id in await self.runtime.queue.cancel_requests(list(self._running)):
            running = self._running.get(task_id)
            if running is not None:
                running.stop(StopReason.CANCEL)

    async def _reap(self) -> None:
        reaped = await self.runtime.queue.reap()
        if reaped:
            log.info("re-queued or ended %d task(s) with expired leases", len(reaped))
        expired = await self.runtime.approvals.expire_due()
        if expired:
            log.info("%d approval(s) expired and took their default decision", expired)

    async def _prune(self) -> None:
        from warden.retention.pruner import Pruner

        counts = await Pruner.for_runtime(self.runtime).run()
        if any(counts.values()):
            log.info("retention pruned %s", ", ".join(f"{n} {kind}" for kind, n in counts.items() if n))

    async def _shutdown(self) -> None:
        """Let running tool calls finish within the grace period, then give every task back."""
        if not self._running:
            return
        deadline = time.monotonic() + self.config.shutdown_grace
        log.info("shutting down: %d task(s) in flight", len(self._running))
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - phases change without a signal
            r.loop is not None and r.loop.phase is Phase.TOOLS for r in self._running.values()
        ):
            await asyncio.sleep(0.05)
        for running in list(self._running.values()):
            running.stop(StopReason.SHUTDOWN)
        await self._drained.wait()

    # -- one task --------------------------------------------------------------------------

    async def _run_lease(self, running: _Running) -> None:
        lease = running.lease
        bind_task(lease.task_id)  # this asyncio task's log records carry the task id
        try:
            await self._execute(running)
        except Exception:
            log.exception("task %s: unexpected failure in the worker", lease.task_id)
        finally:
            self._running.pop(lease.task_id, None)
            if not self._running:
                self._drained.set()
            # A slot of this worker is free: only this process needs to look for work.
            self.runtime.bus.notify_work(local=True)

    async def _execute(self, running: _Running) -> None:
        lease = running.lease
        runtime = self.runtime
        queue = runtime.queue
        try:
            spec = await runtime.catalog.version(lease.agent_name, lease.agent_version)
            inner_provider = runtime.provider(spec.model)  # ConfigError for an unknown model
            model = runtime.config.models[spec.model]
            provider = TracedProvider(inner_provider, provider=model.provider, base_url=model.base_url)
            tools = traced_tools(runtime.tools.resolve(spec.tools))
            task_input = TaskInput(lease.input, [Message.from_dict(m) for m in lease.history or []])
        except (ConfigError, NotFound) as exc:
            await queue.retry_or_fail(lease, exc.to_dict(), retryable=False)
            return
        loop = AgentLoop(
            lease=lease,
            spec=spec,
            provider=provider,
            tools=tools,
            gate=runtime.gate,
            log=runtime.log,
            queue=queue,
            events_config=runtime.config.events,
            home=str(runtime.config.home),
            sandboxes=runtime.sandboxes,
            approvals=runtime.config.approvals,
            audit=runtime.audit,
            price=runtime.config.models[spec.model].price if spec.model in runtime.config.models else None,
            pii=runtime.pii,
            budgets=runtime.budgets,
            untrusted=runtime.config.untrusted_content,
            injection=runtime.injection,
        )
        running.loop = loop
        remaining = spec.limits.timeout - lease.run_seconds

        async def attempt() -> None:
            with invoke_agent_span(
                agent=spec.name,
                version=spec.version,
                task_id=lease.task_id,
                attempt=lease.attempt,
                model=model.model or spec.model,
                provider=model.provider,
                session_id=lease.session_id,
                traceparent=lease.traceparent,
            ):
                async with asyncio.timeout(max(remaining, 0.0)):
                    await loop.run(task_input)

        running.inner = asyncio.create_task(attempt(), name=f"loop:{lease.task_id}")
        if running.stop_reason is not None:
            running.inner.cancel()
        try:
            await asyncio.wait({running.inner})
        except asyncio.CancelledError:
            running.inner.cancel()
            raise
        elapsed = time.monotonic() - running.started
        inner = running.inner

        if inner.cancelled():
            reason = running.stop_reason
            if reason is StopReason.CANCEL:
                with contextlib.suppress(LeaseLost):
                    async with runtime.log.transaction() as tx:
                        await queue.finish(
                            tx,
                            lease,
                            TaskStatus.CANCELLED,
                            error={"code": "cancelled", "message": "cancelled by request"},
                            run_seconds=elapsed,
                        )
            elif reason is StopReason.SHUTDOWN:
                await queue.release(lease, "worker shutting down", run_seconds=elapsed)
            return
        raised = inner.exception()
        if raised is None or isinstance(raised, LeaseLost):
            return
        failure: BaseException = raised
        if isinstance(failure, TimeoutError):
            failure = LimitExceeded(
                f"the task ran longer than its limit of {spec.limits.timeout:g} s", code="timeout"
            )
        if isinstance(failure, LimitExceeded):
            with contextlib.suppress(LeaseLost):
                async with runtime.log.transaction() as tx:
                    await queue.finish(
                        tx, lease, TaskStatus.FAILED, error=failure.to_dict(), run_seconds=elapsed
                    )
        elif isinstance(failure, ModelError):
            log.warning("task %s: model call failed: %s", lease.task_id, failure.message)
            await queue.retry_or_fail(
                lease, failure.to_dict(), retryable=failure.retryable, run_seconds=elapsed
            )
        elif isinstance(failure, StorageError):
            # Nothing can be recorded now; the lease expires and the reaper re-queues the task.
            log.warning("task %s: storage failed: %s", lease.task_id, failure.message)
        elif isinstance(failure, WardenError):
            await queue.retry_or_fail(lease, failure.to_dict(), retryable=False, run_seconds=elapsed)
        else:
            log.error("task %s: the agent loop raised", lease.task_id, exc_info=failure)
            error = {"code": "internal_error", "message": f"{type(failure).__name__}: {failure}"[:2000]}
            await queue.retry_or_fail(lease, error, retryable=True, run_seconds=elapsed)
