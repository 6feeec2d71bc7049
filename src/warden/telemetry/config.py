"""The ``telemetry:`` section of warden.yaml: where traces go, what they may contain, and who
may read ``/metrics``."""

from __future__ import annotations

import ipaddress
import os

from pydantic import BaseModel, ConfigDict, Field

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


class TelemetryConfig(BaseModel):
    """Traces (OpenTelemetry, GenAI conventions), ``/metrics`` access and the worker's own port."""

    model_config = ConfigDict(extra="forbid")

    otlp_endpoint: str | None = None
    """OTLP/HTTP collector base URL (``http://otel-collector:4318``); spans go to
    ``<endpoint>/v1/traces``. Unset: ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, used as is); neither: tracing is off."""
    service_name: str = Field(default="warden", min_length=1, max_length=200)
    """``service.name`` of every span (``$OTEL_SERVICE_NAME`` wins when set)."""
    capture_content: bool = False
    """Put chat messages (as the model sees them: PII already replaced by placeholders) on
    ``chat`` spans. Off by default: prompts and answers are data, not telemetry. Tool
    arguments and results are never put on spans."""
    metrics_public: bool | None = None
    """Who may read ``/metrics``: ``true`` anyone who reaches the port; ``false`` only a caller
    with the metrics token or an ``admin`` API key; unset (the default): public when
    ``server.host`` is a loopback address, closed otherwise."""
    metrics_token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """Name of an environment variable holding a bearer token that may read ``/metrics``
    (for Prometheus' ``authorization.credentials_file``), so a scraper needs no API key."""
    worker_port: int | None = Field(default=None, ge=0, le=65535)
    """A worker-only process (``warden worker``, ``serve --role worker``) serves ``/healthz``,
    ``/readyz`` and ``/metrics`` on this port (on ``server.host``); unset: no HTTP at all."""

    def resolved_otlp_traces_url(self) -> str | None:
        """The URL spans are POSTed to, or None when tracing is off."""
        if self.otlp_endpoint:
            return self.otlp_endpoint.rstrip("/") + "/v1/traces"
        if os.environ.get(OTLP_TRACES_ENDPOINT_ENV):
            return os.environ[OTLP_TRACES_ENDPOINT_ENV]
        if os.environ.get(OTLP_ENDPOINT_ENV):
            return os.environ[OTLP_ENDPOINT_ENV].rstrip("/") + "/v1/traces"
        return None

    def resolved_service_name(self) -> str:
        return os.environ.get("OTEL_SERVICE_NAME") or self.service_name

    def metrics_open_for(self, host: str) -> bool:
        """Whether ``/metrics`` needs no credential on a server bound to ``host``."""
        if self.metrics_public is not None:
            return self.metrics_public
        return is_loopback(host)

    def metrics_token(self) -> str | None:
        if not self.metrics_token_env:
            return None
        return os.environ.get(self.metrics_token_env) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
