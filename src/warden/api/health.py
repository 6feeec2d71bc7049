"""Liveness (the process answers) and readiness (the database answers)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warden.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse(Health(status="unavailable", checks={"runtime": "starting"}).model_dump(), 503)
    try:
        await runtime.db.ping()
    except Exception:
        # The driver's message can name hosts and users: it goes to the log, not to callers.
        logging.getLogger("warden.api").warning("readiness: database check failed", exc_info=True)
        body = Health(status="unavailable", checks={"database": "unreachable"})
        return JSONResponse(body.model_dump(), 503)
    return JSONResponse(Health(status="ok", checks={"database": "ok"}).model_dump())
