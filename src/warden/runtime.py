"""The composition root: opens the database (migrating it), builds the bus, log, queue,
catalog, tools, gate and services from the configuration, and owns their lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warden.config import AgentSpec, ModelPrice, WardenConfig
from warden.errors import ConfigError
from warden.events.bus import EventBus
from warden.events.factory import build_event_bus
from warden.events.log import EventLog
from warden.governance.audit import AuditLog
from warden.governance.budgets import BudgetLedger
from warden.governance.gate import Gate
from warden.governance.pii.errors import VaultError
from warden.governance.pii.guard import PiiGuard
from warden.governance.policy.store import PolicyStore
from warden.governance.tool_policy import build_policy, tool_policy
from warden.governance.untrusted import InjectionDetector, build_detector
from warden.models.base import ModelProvider
from warden.models.factory import build_provider
from warden.queue.sql import SqlTaskQueue
from warden.sandbox.factory import build_backends
from warden.service.agents import AgentCatalog, collect_specs
from warden.service.approvals import ApprovalService
from warden.service.keys import KeyService
from warden.service.sessions import SessionService
from warden.service.tasks import TaskService
from warden.store.database import Database
from warden.store.migrate import upgrade
from warden.telemetry.genai import counted_policy
from warden.telemetry.tracing import configure_tracing
from warden.tools.mcp import MCPManager, PinStore
from warden.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from warden.sandbox.manager import SandboxManager

log = logging.getLogger("warden")


@dataclass
class Runtime:
    config: WardenConfig
    db: Database
    bus: EventBus
    log: EventLog
    queue: SqlTaskQueue
    catalog: AgentCatalog
    tools: ToolRegistry
    gate: Gate
    keys: KeyService
    tasks: TaskService
    sessions: SessionService
    approvals: ApprovalService
    policy: PolicyStore
    audit: AuditLog
    budgets: BudgetLedger
    sandboxes: SandboxManager | None = None
    mcp: MCPManager | None = None
    pii: PiiGuard | None = None
    """The PII vault's keys (and, where agents run, its detector); None when redaction is off."""
    injection: InjectionDetector | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    _providers: dict[str, ModelProvider] = field(default_factory=dict)
    _started: bool = False

    @classmethod
    async def open(cls, config: WardenConfig) -> Runtime:
        config.home.mkdir(parents=True, exist_ok=True)
        configure_tracing(config.telemetry)
        # MCP servers are contacted lazily, on an agent's first call of one of their tools.
        mcp = MCPManager(config.mcp_servers, log_dir=config.home / "mcp") if config.mcp_servers else None
        tools = ToolRegistry.from_config(config.tools, mcp=mcp)
        specs = collect_specs(config)
        for spec in specs:
            if spec.model not in config.models:
                raise ConfigError(
                    f"agent {spec.name!r} uses model {spec.model!r}, which warden.yaml does not define "
                    f"(models: {', '.join(config.model_names())})"
                )
            tools.resolve(spec.tools)
            if spec.limits.max_cost is not None and config.models[spec.model].price is None:
                raise ConfigError(
                    f"agent {spec.name!r} has a cost budget (limits.max_cost) but its model "
                    f"{spec.model!r} has no price: set models.{spec.model}.price"
                )
        # Invalid policy files stop the start, each problem with its file and line.
        policy = build_policy(config.policy)
        try:
            pii = PiiGuard.from_config(config.pii)
        except VaultError as exc:
            raise ConfigError(f"pii: {exc.message}") from None
        injection = build_detector(config.untrusted_content)
        for budget in config.budgets:
            priced = [s for s in specs if budget.agent in (None, s.name)]
            if budget.max_cost is not None and any(config.models[s.model].price is None for s in priced):
                raise ConfigError(
                    f"budget {budget.name!r} has max_cost but an agent it covers uses a model without "
                    "a price: set models.<name>.price"
                )
        db = Database(config.resolved_database_url, pool_size=config.database_pool_size)
        audit = AuditLog.from_env(db)
        try:
            await upgrade(db)
            holder: dict[str, EventLog] = {}

            async def read_log(task_id: str, after: int) -> list:  # type: ignore[type-arg]
                return await holder["log"].read(task_id, after)

            bus = build_event_bus(config, read_log)
            event_log = EventLog(db, bus)
            holder["log"] = event_log
            queue = SqlTaskQueue(
                event_log, lease_ttl=config.worker.lease_ttl, retry_backoff=config.worker.retry_backoff
            )
            catalog = AgentCatalog(db, specs)
            await catalog.register()
            if mcp is not None:
                mcp.pins = PinStore(db)
                await mcp.load()
        except BaseException:
            await db.dispose()
            raise
        sandbox_home = config.home / "sandbox"
        backends = build_backends(config.sandbox, sandbox_home)
        manager = None
        if backends:
            from warden.sandbox.manager import SandboxManager

            manager = SandboxManager(db, config.sandbox, backends, sandbox_home)
        runtime = cls(
            sandboxes=manager,
            mcp=mcp,
            pii=pii,
            injection=injection,
            budgets=BudgetLedger(db, config.budgets, _price_lookup(config, specs)),
            config=config,
            db=db,
            bus=bus,
            log=event_log,
            queue=queue,
            catalog=catalog,
            tools=tools,
            gate=Gate(counted_policy(tool_policy(policy))),
            policy=policy,
            audit=audit,
            keys=KeyService(db, audit=audit),
            tasks=TaskService(
                db,
                event_log,
                queue,
                catalog,
                max_attempts=config.worker.max_attempts,
                max_input_chars=config.server.max_input_chars,
            ),
            sessions=SessionService(db, catalog),
            approvals=ApprovalService(db, event_log, queue, audit),
        )
        runtime.tasks.pii = pii
        runtime.sessions.pii = pii
        runtime.tasks.budgets = runtime.budgets
        return runtime

    async def load_pii(self) -> None:
        """Load the PII model before the first task needs it (worker processes)."""
        if self.pii is not None:
            await self.pii.load()

    def provider(self, model: str) -> ModelProvider:
        """The provider behind a model name of warden.yaml (one client per name, reused)."""
        provider = self._providers.get(model)
        if provider is None:
            model_config = self.config.models.get(model)
            if model_config is None:
                raise ConfigError(f"model {model!r} is not defined in warden.yaml")
            provider = build_provider(model_config)
            self._providers[model] = provider
        return provider

    async def start_background(self) -> None:
        """Start what runs for the process's lifetime: sandbox re-adoption, pools and reaping."""
        if self._started:
            return
        self._started = True
        if self.policy.watched_files():
            self._background.append(asyncio.create_task(self.policy.watch(), name="policy-reload"))
        if self.sandboxes is not None:
            await self.sandboxes.start()

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self.mcp is not None:
            await self.mcp.aclose()
        if self.pii is not None:
            self.pii.close()
        if self.sandboxes is not None:
            await self.sandboxes.close()
        for provider in self._providers.values():
            try:
                await provider.aclose()
            except Exception:  # closing is best effort
                log.debug("closing a model provider failed", exc_info=True)
        await self.bus.aclose()
        await self.db.dispose()


def _price_lookup(config: WardenConfig, specs: list[AgentSpec]) -> Callable[[str], ModelPrice | None]:
    """Agent name → the price of its model (budgets price past tasks by their agent)."""
    prices = {s.name: config.models[s.model].price for s in specs if s.model in config.models}
    return lambda agent: prices.get(agent)
