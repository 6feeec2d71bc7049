"""Agent routes: the agents this server runs and their versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from warden.api._auth import principal
from warden.api.schemas import AgentView, ErrorBody
from warden.config import AgentSpec, ModelPrice
from warden.service.keys import Principal

router = APIRouter(prefix="/v1/agents", tags=["agents"])
Caller = Annotated[Principal, Depends(principal)]


@router.get("", response_model=list[AgentView])
async def list_agents(request: Request, caller: Caller) -> list[AgentView]:
    caller.require("tasks:read")
    catalog = request.app.state.runtime.catalog
    return [AgentView.of(spec, price=_price(request, spec)) for _, spec in sorted(catalog.current.items())]


@router.get("/{name}", response_model=AgentView, responses={404: {"model": ErrorBody}})
async def get_agent(name: str, request: Request, caller: Caller) -> AgentView:
    caller.require("tasks:read")
    catalog = request.app.state.runtime.catalog
    spec = catalog.get(name)
    return AgentView.of(spec, await catalog.versions(name), price=_price(request, spec))


def _price(request: Request, spec: AgentSpec) -> ModelPrice | None:
    model = request.app.state.runtime.config.models.get(spec.model)
    return model.price if model is not None else None
