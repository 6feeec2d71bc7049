"""Configuration: one `warden.yaml` plus `WARDEN_*` environment overrides (pydantic-settings).

With no file at all the built-in defaults run the demo: SQLite under `./.warden/`, the
in-process queue and event bus, and the scripted model when no model endpoint is configured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from warden.errors import ConfigError
from warden.governance.budgets import BudgetConfig
from warden.governance.pii.config import PiiConfig
from warden.governance.policy.config import PolicyConfig
from warden.governance.untrusted import UntrustedContentConfig
from warden.retention.config import RetentionConfig
from warden.telemetry.config import TelemetryConfig

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
"""Agents, models and tools are named like DNS labels, so they are safe in URLs and logs."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPrice(_Section):
    """What a model costs, in US dollars per million tokens (for budgets and usage reports)."""

    input_per_mtok: float = Field(ge=0, le=10_000)
    output_per_mtok: float = Field(ge=0, le=10_000)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class ModelConfig(_Section):
    """One model endpoint."""

    provider: Literal["openai", "anthropic", "scripted"]
    model: str = ""
    """Model name sent to the provider (``gpt-4o-mini``, ``claude-sonnet-4-5``); unused by ``scripted``."""
    base_url: str | None = None
    """Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, Azure); the provider's default when unset."""
    api_key: SecretStr | None = None
    """Prefer ``api_key_env``: a key written in the file ends up in backups."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the key."""
    timeout: float = Field(default=120.0, gt=0, le=3600)
    """Seconds one model call may take, streaming included."""
    connect_timeout: float = Field(default=10.0, gt=0, le=600)
    max_retries: int = Field(default=3, ge=0, le=20)
    """Retries with exponential backoff on 429, 5xx and dropped connections."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    headers: dict[str, str] = Field(default_factory=dict)
    script: str | None = None
    """``scripted`` only: a built-in script name or a path to a YAML script."""
    price: ModelPrice | None = None
    """Needed for cost budgets (``limits.max_cost``) of agents on this model."""

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.provider == "scripted" and not self.script:
            self.script = "demo"
        if self.provider in ("openai", "anthropic") and not self.model:
            raise ValueError(f"provider {self.provider!r} needs a 'model' name")
        return self


class Limits(_Section):
    max_steps: int = Field(default=20, ge=1, le=10_000)
    """Model turns one task may take."""
    max_tokens: int = Field(default=200_000, ge=1)
    """Input plus output tokens over the whole task."""
    timeout: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    """Seconds of running time over all attempts of a task."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Cap on output tokens of one model call."""
    max_tool_calls: int | None = Field(default=None, ge=0, le=1_000_000)
    """Tool calls one task may make."""
    max_cost: float | None = Field(default=None, gt=0, le=1_000_000)
    """US dollars one task may spend on its model (needs the model's ``price``)."""


class AgentSpec(_Section):
    """An agent: what model it talks to, what it is told, which tools it may call."""

    name: str = Field(pattern=NAME_PATTERN)
    version: str = "1"
    description: str = ""
    model: str = "default"
    """A key of ``models`` in warden.yaml."""
    instructions: str = ""
    tools: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("version")
    @classmethod
    def _version_format(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}", value):
            raise ValueError("version must be 1-32 characters of letters, digits, '.', '_', '+', '-'")
        return value


class ToolConfig(_Section):
    """A tool implemented in Python and loaded by import path (trusted operator configuration)."""

    name: str = Field(pattern=NAME_PATTERN)
    python: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """``package.module:attribute``: a `warden.tools.Tool` or a function to wrap as one."""


MCP_SERVER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""MCP server names prefix their tools (``server.tool``), so unlike other names they hold no '.'."""

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class MCPOAuthConfig(_Section):
    """OAuth 2.1 for an HTTP MCP server (discovery, registration, PKCE and refresh are the
    ``mcp`` SDK's); tokens live in memory only, and secrets come from environment variables."""

    grant: Literal["authorization_code", "client_credentials"] = "authorization_code"
    """``client_credentials``: the client acts as itself (needs ``client_id`` and a secret).
    ``authorization_code``: Warden follows the authorization redirect itself, without a
    browser, so the authorization server must approve this client without a person (a
    pre-approved or trusted client); an interactive login or consent page fails the connection."""
    client_id: str | None = Field(default=None, min_length=1, max_length=2048)
    """A pre-registered client; without one, Warden registers dynamically (or uses
    ``client_metadata_url`` where the authorization server accepts it)."""
    client_secret_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding the client secret (the value is never logged)."""
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    """How a pre-registered client authenticates at the token endpoint; defaults to
    ``client_secret_basic`` with a secret and ``none`` without."""
    issuer: str | None = None
    """The authorization server a pre-registered ``client_id`` belongs to; when set, Warden
    refuses to send its credentials to any other."""
    scopes: list[str] = Field(default_factory=list)
    """Scopes to ask for; empty lets the server's challenge and metadata decide."""
    client_metadata_url: str | None = None
    """``authorization_code``: an https URL of this client's metadata document, used as its
    ``client_id`` where the authorization server supports client ID metadata documents."""
    redirect_uri: str = "http://localhost/oauth/callback"
    """``authorization_code``: the registered redirect URI; Warden reads the code from the
    authorization server's redirect to it and never serves it."""
    client_name: str = "warden"

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or any(c.isspace() or c in '"\\' for c in scope):
                raise ValueError(f"invalid OAuth scope {scope!r}")
        return value

    @field_validator("issuer", "redirect_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("client_metadata_url")
    @classmethod
    def _metadata_url(cls, value: str | None) -> str | None:
        if value is not None:
            parsed = urlsplit(value)
            if parsed.scheme != "https" or not parsed.hostname or parsed.path in ("", "/"):
                raise ValueError("client_metadata_url must be an https:// URL with a path")
        return value

    @model_validator(mode="after")
    def _check(self) -> MCPOAuthConfig:
        if self.client_secret_env and not self.client_id:
            raise ValueError("'client_secret_env' needs the 'client_id' it belongs to")
        if self.token_endpoint_auth_method is not None and not self.client_id:
            raise ValueError("'token_endpoint_auth_method' is for a pre-registered 'client_id'")
        if self.token_endpoint_auth_method == "none" and self.client_secret_env:
            raise ValueError("token_endpoint_auth_method 'none' sends no secret: drop 'client_secret_env'")
        if self.token_endpoint_auth_method not in (None, "none") and not self.client_secret_env:
            raise ValueError(
                f"token_endpoint_auth_method {self.token_endpoint_auth_method!r} needs 'client_secret_env'"
            )
        if self.grant == "client_credentials":
            if not self.client_id or not self.client_secret_env:
                raise ValueError("grant 'client_credentials' needs 'client_id' and 'client_secret_env'")
            if self.client_metadata_url:
                raise ValueError("'client_metadata_url' is for grant 'authorization_code'")
        return self

    @property
    def auth_method(self) -> Literal["client_secret_basic", "client_secret_post", "none"]:
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        return "client_secret_basic" if self.client_secret_env else "none"

    def client_secret(self) -> str | None:
        """The secret from ``client_secret_env`` (read when needed, never stored in config or logged)."""
        if not self.client_secret_env:
            return None
        return os.environ.get(self.client_secret_env) or None


class MCPServerConfig(_Section):
    """An MCP server whose tools agents may call, as ``server.tool`` or ``server.*``."""

    name: str = Field(pattern=MCP_SERVER_NAME_PATTERN)
    """Prefix of the server's tools: lower-case letters, digits, '_' and '-' (no '.')."""
    transport: Literal["stdio", "http"] | None = None
    """Inferred when unset: ``stdio`` with ``command``, ``http`` with ``url``."""
    command: str | None = None
    """stdio: the executable to start."""
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """stdio: extra environment variables (the server does not inherit Warden's secrets)."""
    cwd: Path | None = None
    url: str | None = None
    """http: the Streamable HTTP endpoint, ``http(s)://host/mcp``."""
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """http: name of the environment variable holding a bearer token (the value is never logged)."""
    oauth: MCPOAuthConfig | None = None
    """http: OAuth 2.1 instead of a static bearer token."""
    elicitation: Literal["decline", "accept_defaults"] = "decline"
    """What Warden answers a server's elicitation (or input-required) request, with no person
    at the MCP layer: ``decline``, or ``accept_defaults`` — accept with the requested schema's
    default values, declining when a required field has no default."""
    era: Literal["auto", "legacy", "modern"] = "auto"
    """``auto`` probes ``server/discover`` and falls back to the ``initialize`` handshake (the
    verdict is remembered); ``legacy`` goes straight to ``initialize``; ``modern`` requires 2026-07-28."""
    stateful: bool = False
    """One connection per Warden session (servers that keep state per client) instead of one shared."""
    approval: Literal["manual", "auto"] = "manual"
    """``auto`` pins unflagged tools the first time they are seen (trust on first use); flagged
    and changed tools always wait for ``warden mcp approve``."""
    connect_timeout: float = Field(default=30.0, gt=0, le=600)
    """Seconds to start (or reach) the server and finish the handshake."""
    call_timeout: float = Field(default=60.0, gt=0, le=24 * 3600)
    """Seconds a call may go without a result or a progress notification."""
    max_call_timeout: float = Field(default=600.0, gt=0, le=7 * 24 * 3600)
    """Seconds a call may take at most, progress or not; then it is cancelled on the server."""
    max_reconnects: int = Field(default=3, ge=0, le=100)
    """Connection attempts after the first, with exponential backoff, before a call gives up."""
    reconnect_backoff: float = Field(default=0.5, ge=0, le=600)
    """Seconds before the first reconnection attempt; doubles each time."""
    max_sessions: int = Field(default=64, ge=1, le=100_000)
    """``stateful`` servers: connections kept open at most; the least recently used closes first."""
    idempotent: bool = False
    """Declare every tool of this server safe to re-run after an interruption. Servers' own
    annotations are hints from an untrusted party, so Warden does not act on them."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _check(self) -> MCPServerConfig:
        if self.transport is None:
            if self.command and self.url:
                raise ValueError("give either 'command' (stdio) or 'url' (http), not both")
            if not self.command and not self.url:
                raise ValueError("an MCP server needs 'command' (stdio) or 'url' (http)")
            self.transport = "stdio" if self.command else "http"
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio MCP server needs a 'command'")
            if self.url or self.headers or self.bearer_token_env or self.oauth:
                raise ValueError("'url', 'headers', 'bearer_token_env' and 'oauth' are for http servers")
        else:
            if not self.url:
                raise ValueError("an http MCP server needs a 'url'")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("'command', 'args', 'env' and 'cwd' are for stdio servers")
        if self.oauth is not None and self.bearer_token_env:
            raise ValueError("give either 'bearer_token_env' or 'oauth', not both")
        if self.oauth is not None and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError("an 'Authorization' header cannot be combined with 'oauth'")
        if self.max_call_timeout < self.call_timeout:
            raise ValueError("max_call_timeout must not be shorter than call_timeout")
        return self

    def bearer_token(self) -> str | None:
        """The token from ``bearer_token_env`` (read at connect time, never stored or logged)."""
        if not self.bearer_token_env:
            return None
        return os.environ.get(self.bearer_token_env) or None


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    mcp_allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins (``https://app.example.com``) allowed to call ``/mcp`` besides loopback
    ones; any other ``Origin`` is refused (DNS-rebinding protection)."""
    max_input_chars: int = Field(default=200_000, ge=1)
    """Largest task input accepted."""


class WorkerConfig(_Section):
    concurrency: int = Field(default=8, ge=1, le=1024)
    lease_ttl: float = Field(default=30.0, ge=0.5, le=3600)
    """Seconds a lease lives without a heartbeat before the reaper re-queues the task."""
    heartbeat_interval: float | None = Field(default=None, gt=0)
    """Defaults to a third of ``lease_ttl``."""
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    """How often an idle worker looks for work when nothing wakes it."""
    cancel_poll_interval: float = Field(default=0.25, gt=0, le=10)
    """How often a worker checks for cancel requests made in another process."""
    max_attempts: int = Field(default=3, ge=1, le=100)
    retry_backoff: float = Field(default=2.0, ge=0, le=3600)
    """Seconds before the second attempt; doubles with each further attempt."""
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)
    """On SIGTERM, seconds running tool calls get to finish before they are cancelled."""
    reap_interval: float = Field(default=2.0, gt=0, le=3600)

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat_interval or self.lease_ttl / 3


class EventsConfig(_Section):
    delta_flush_interval: float = Field(default=0.05, ge=0, le=10)
    """Streamed tokens are stored as one `model.delta` event per this many seconds."""
    delta_flush_chars: int = Field(default=2048, ge=1)
    subscriber_buffer: int = Field(default=1024, ge=16)
    """Live events a slow subscriber may fall behind before it re-reads from the log."""


class ApprovalsConfig(_Section):
    timeout: float | None = Field(default=24 * 3600.0, gt=0)
    """Seconds a tool call waits for a human before ``on_expiry`` decides it (None: forever)."""
    on_expiry: Literal["approve", "deny"] = "deny"
    """The decision when nobody answers in time."""


class SandboxLimitsConfig(_Section):
    cpus: float = Field(default=1.0, gt=0, le=64)
    memory_mb: int = Field(default=1024, ge=64, le=256 * 1024)
    pids: int = Field(default=128, ge=8, le=65536)
    disk_mb: int = Field(default=1024, ge=1, le=1024 * 1024)
    output_bytes: int = Field(default=1_000_000, ge=1024, le=256 * 1024 * 1024)
    timeout: float = Field(default=60.0, gt=0, le=24 * 3600)


class SandboxNetworkConfig(_Section):
    egress: bool = False
    """Off by default: only the sandbox's own loopback. When on, programs reach the allow-list
    through Warden's HTTP proxy (``HTTP_PROXY``/``HTTPS_PROXY`` are set), never directly."""
    allow: list[str] = Field(default_factory=list)
    """CIDRs, addresses and domains (``pypi.org``, ``*.example.com``) reachable through the proxy.
    Private, loopback, link-local and metadata addresses stay blocked whatever this says."""
    ports: list[int] = Field(default_factory=lambda: [80, 443])
    """Destination ports the proxy connects to."""
    hosts: dict[str, list[str]] = Field(default_factory=dict)
    """Names pinned to addresses, resolved without DNS (like ``/etc/hosts``)."""

    @model_validator(mode="after")
    def _valid_rules(self) -> SandboxNetworkConfig:
        from warden.netpolicy import EgressPolicy, EgressRuleError

        try:
            EgressPolicy.from_config(self.allow, self.ports, self.hosts)
        except EgressRuleError as exc:
            raise ValueError(str(exc)) from None
        if any(not 1 <= port <= 65535 for port in self.ports):
            raise ValueError("ports must be between 1 and 65535")
        return self


class SandboxTemplate(_Section):
    """A kind of sandbox: limits, network, environment, warm pool and idle policy."""

    name: str = Field(pattern=NAME_PATTERN)
    backend: Literal["gvisor", "bwrap"] | None = None
    """Defaults to ``sandbox.backend``."""
    limits: SandboxLimitsConfig = Field(default_factory=SandboxLimitsConfig)
    network: SandboxNetworkConfig = Field(default_factory=SandboxNetworkConfig)
    env: dict[str, str] = Field(default_factory=dict)
    pool_size: int = Field(default=0, ge=0, le=1000)
    """Sandboxes kept started and unclaimed, so a claim takes milliseconds."""
    hibernate_after: float | None = Field(default=600.0, gt=0)
    """Idle seconds before a sandbox is checkpointed to disk and its memory freed."""
    ttl: float | None = Field(default=24 * 3600.0, gt=0)
    """Seconds after its last use that a sandbox is destroyed."""


class SandboxConfig(_Section):
    enabled: bool = True
    backend: Literal["gvisor", "bwrap", "auto"] = "auto"
    """``auto``: gVisor when runsc works here, else bubblewrap (weaker isolation)."""
    runsc: str = "runsc"
    platform: str | None = None
    """runsc ``--platform``; the default (ptrace) works everywhere; kvm needs /dev/kvm."""
    default_template: str = "python"
    templates: list[SandboxTemplate] = Field(default_factory=lambda: [SandboxTemplate(name="python")])

    def template(self, name: str) -> SandboxTemplate | None:
        return next((t for t in self.templates if t.name == name), None)


class WardenConfig(BaseSettings):
    """Everything Warden reads at start."""

    model_config = SettingsConfigDict(env_prefix="WARDEN_", env_nested_delimiter="__", extra="forbid")

    home: Path = Path(".warden")
    """Where the SQLite database, logs and sandbox state live."""
    database_url: str | None = None
    """``postgresql+asyncpg://…`` or ``sqlite+aiosqlite:///…``; SQLite under ``home`` when unset."""
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    """PostgreSQL connections one process holds at most. Every API and worker process counts:
    keep processes × this below the server's ``max_connections`` (100 by default)."""
    redis_url: str | None = None
    """``redis://host:port/db``: cluster mode's event bus (wake-ups, event fan-out, cancels)."""
    log_level: str = "INFO"
    server: ServerConfig = Field(default_factory=ServerConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    agents: list[AgentSpec] = Field(default_factory=list)
    agents_dirs: list[Path] = Field(default_factory=lambda: [Path("agents")])
    """Folders of agent spec files (``*.yaml``), read in addition to ``agents``."""
    tools: list[ToolConfig] = Field(default_factory=list)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """Traces (OTLP), `/metrics` access; see docs/operations.md."""
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    """How long finished tasks, events, checkpoints and snapshots are kept (the audit log: forever)."""
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """Tool-call rules (allow / deny / ask); see docs/governance.md."""
    pii: PiiConfig = Field(default_factory=PiiConfig)
    """Redaction of personal data before models see it (off by default; needs a key)."""
    budgets: list[BudgetConfig] = Field(default_factory=list)
    """Token, dollar and task budgets per tenant (and agent) over time windows."""
    untrusted_content: UntrustedContentConfig = Field(default_factory=UntrustedContentConfig)
    """How tool results are marked for the model, and the prompt-injection detector."""
    mcp_servers: list[MCPServerConfig] = Field(default_factory=list)
    """MCP servers whose tools agents may list as ``server.tool`` or ``server.*``."""

    @field_validator("mcp_servers")
    @classmethod
    def _unique_mcp_names(cls, servers: list[MCPServerConfig]) -> list[MCPServerConfig]:
        seen: set[str] = set()
        for server in servers:
            if server.name in seen:
                raise ValueError(f"two MCP servers are named {server.name!r}")
            seen.add(server.name)
        return servers

    @field_validator("budgets")
    @classmethod
    def _unique_budget_names(cls, budgets: list[BudgetConfig]) -> list[BudgetConfig]:
        names = [b.name for b in budgets]
        if len(names) != len(set(names)):
            raise ValueError("budget names must be unique")
        return budgets

    def mcp_server(self, name: str) -> MCPServerConfig | None:
        return next((s for s in self.mcp_servers if s.name == name), None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over warden.yaml, which arrives as init arguments.
        return env_settings, init_settings

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.home / 'warden.db').as_posix()}"

    def model_names(self) -> list[str]:
        return sorted(self.models)


def default_model() -> ModelConfig:
    """The model behind ``default`` when warden.yaml names none: a real endpoint when the
    usual OpenAI (or else Anthropic) variables are set, the scripted demo model otherwise."""
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return ModelConfig(
            provider="openai",
            model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
            base_url=os.environ.get("OPENAI_BASE_URL") or None,
            api_key_env="OPENAI_API_KEY",
        )
    if os.environ.get("ANTHROPIC_API_KEY"):
        return ModelConfig(
            provider="anthropic",
            model=os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
            base_url=os.environ.get("ANTHROPIC_BASE_URL") or None,
            api_key_env="ANTHROPIC_API_KEY",
        )
    return ModelConfig(provider="scripted", script="demo")


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source} is invalid:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path | None = None) -> WardenConfig:
    """Read warden.yaml (``path``, ``$WARDEN_CONFIG`` or ``./warden.yaml`` if present)."""
    if path is None and os.environ.get("WARDEN_CONFIG"):
        path = Path(os.environ["WARDEN_CONFIG"])
    if path is None and Path("warden.yaml").is_file():
        path = Path("warden.yaml")
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        data = loaded
    try:
        config = WardenConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from exc
    if "default" not in config.models:
        config.models["default"] = default_model()
    return config
