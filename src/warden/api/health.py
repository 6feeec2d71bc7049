"""Liveness (the process answers) and readiness (the database answers)."""

from __future__ import annotations

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
    except Exception as exc:
        body = Health(status="unavailable", checks={"database": f"error: {str(exc)[:200]}"})
        return JSONResponse(body.model_dump(), 503)
    return JSONResponse(Health(status="ok", checks={"database": "ok"}).model_dump())
