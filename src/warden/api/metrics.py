"""``GET /metrics``: Prometheus text exposition of this process's metrics and of the queue
and sandbox gauges read from the database. Open or closed per `telemetry.metrics_public`."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from warden.api._auth import _token
from warden.errors import Forbidden, Unauthorized
from warden.telemetry.metrics import REGISTRY
from warden.telemetry.queue_stats import QueueGauges

router = APIRouter(tags=["health"])


async def _authorise(request: Request) -> None:
    runtime = request.app.state.runtime
    telemetry = runtime.config.telemetry
    if telemetry.metrics_open_for(runtime.config.server.host):
        return
    token = _token(request.headers, None)
    if not token:
        raise Unauthorized("/metrics needs the metrics token or an admin API key", code="unauthorized")
    expected = telemetry.metrics_token()
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    principal = await runtime.keys.authenticate(token)
    if "admin" not in principal.scopes:
        raise Forbidden("/metrics needs the metrics token or an admin API key", code="missing_scope")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    if getattr(request.app.state, "runtime", None) is None:
        return Response("Warden is starting\n", status_code=503, media_type="text/plain")
    await _authorise(request)
    gauges: QueueGauges | None = getattr(request.app.state, "queue_gauges", None)
    if gauges is None:
        gauges = request.app.state.queue_gauges = QueueGauges(request.app.state.runtime.db)
    body = generate_latest(REGISTRY) + await gauges.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
