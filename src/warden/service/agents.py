"""The agent catalog: specs from warden.yaml, agent folders and the built-in demo, registered
in the database by name and version so a task always runs the version it was submitted with."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError
from sqlalchemy import select

from warden.config import AgentSpec, WardenConfig
from warden.errors import ConfigError, NotFound
from warden.store.database import Database, wall_clock
from warden.store.schema import agents


def _spec_hash(spec: AgentSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def load_spec_file(path: Path) -> AgentSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read agent spec {path}: {exc}") from exc
    try:
        return AgentSpec.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"agent spec {path} is invalid: {details}") from exc


def collect_specs(config: WardenConfig) -> list[AgentSpec]:
    """Built-in specs first, then folders, then warden.yaml; a later one with the same name wins."""
    by_name: dict[str, AgentSpec] = {}
    builtin = resources.files("warden") / "agents"
    for entry in sorted(builtin.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            spec = load_spec_file(Path(str(entry)))
            by_name[spec.name] = spec
    for folder in config.agents_dirs:
        if folder.is_dir():
            for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                spec = load_spec_file(path)
                by_name[spec.name] = spec
    for spec in config.agents:
        by_name[spec.name] = spec
    return list(by_name.values())


class AgentCatalog:
    """Current specs by name, and every registered version by (name, version)."""

    def __init__(self, db: Database, specs: list[AgentSpec]) -> None:
        self.db = db
        self.current = {s.name: s for s in specs}
        self._versions: dict[tuple[str, str], AgentSpec] = {(s.name, s.version): s for s in specs}

    async def register(self) -> None:
        """Record the current specs. A spec edited without a new version is registered as
        ``<version>+<hash>``, so tasks already submitted keep the behaviour they started with."""
        async with self.db.transaction() as conn:
            for name, spec in list(self.current.items()):
                digest = _spec_hash(spec)
                candidates = [spec.version, f"{spec.version}+{digest[:8]}"]
                for version in candidates:
                    row = (
                        await conn.execute(
                            select(agents.c.spec_hash).where(
                                agents.c.name == name, agents.c.version == version
                            )
                        )
                    ).first()
                    if row is not None and row.spec_hash != digest:
                        continue
                    if version != spec.version:
                        spec = spec.model_copy(update={"version": version})
                        self.current[name] = spec
                    if row is None:
                        await conn.execute(
                            agents.insert().values(
                                name=name,
                                version=version,
                                spec=spec.model_dump(mode="json"),
                                spec_hash=digest,
                                created_at=wall_clock(),
                            )
                        )
                    self._versions[(name, version)] = spec
                    break

    def get(self, name: str) -> AgentSpec:
        spec = self.current.get(name)
        if spec is None:
            raise NotFound(f"no agent named {name!r}", code="agent_not_found")
        return spec

    async def version(self, name: str, version: str) -> AgentSpec:
        spec = self._versions.get((name, version))
        if spec is not None:
            return spec
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(agents.c.spec).where(agents.c.name == name, agents.c.version == version)
                )
            ).first()
        if row is None:
            raise NotFound(f"no agent {name}@{version}", code="agent_not_found")
        spec = AgentSpec.model_validate(row.spec)
        self._versions[(name, version)] = spec
        return spec

    async def versions(self, name: str) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(agents.c.version).where(agents.c.name == name).order_by(agents.c.created_at)
            )
            return [r.version for r in rows]
