"""Tenants and API keys: bootstrap of the first admin key, creation, listing, revocation and
authentication. Only a SHA-256 of each key's secret is stored; the key is shown once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select, update

from warden.errors import Forbidden, NotFound, Unauthorized
from warden.governance.audit import AuditEntry, AuditLog
from warden.ids import new_id
from warden.store.database import Database, wall_clock
from warden.store.schema import api_keys, tenants

SCOPES = frozenset(
    {
        "admin",
        "tasks:read",
        "tasks:write",
        "sandboxes:read",
        "sandboxes:write",
        "pii:read",
        "approvals:read",
        "approvals:write",
        "audit:read",
    }
)
DEFAULT_SCOPES = ("tasks:read", "tasks:write", "sandboxes:read", "sandboxes:write")
_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key, its tenant and what it may do."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"this API key lacks the {scope!r} scope", code="missing_scope")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class NewKey:
    info: KeyInfo
    secret: str
    """The full key; shown once, never stored."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != "wk" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyService:
    def __init__(self, db: Database, *, audit: AuditLog | None = None) -> None:
        self.db = db
        self.audit = audit
        """Key creation and revocation are admin actions: recorded when an audit log is given."""
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def ensure_tenant(self, name: str) -> str:
        async with self.db.transaction() as conn:
            row = (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).first()
            if row is not None:
                return str(row.id)
            tenant_id = new_id("tnt")
            await conn.execute(tenants.insert().values(id=tenant_id, name=name, created_at=wall_clock()))
            return tenant_id

    async def bootstrap(self) -> NewKey | None:
        """Create the ``default`` tenant and an admin key if no key exists yet."""
        async with self.db.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
        if count:
            return None
        return await self.create(
            "default", name="bootstrap admin", scopes=["admin"], actor="system:bootstrap"
        )

    async def create(
        self, tenant: str, *, name: str, scopes: list[str] | None = None, actor: str = "system"
    ) -> NewKey:
        chosen = sorted(set(scopes or DEFAULT_SCOPES))
        unknown = set(chosen) - SCOPES
        if unknown:
            raise Forbidden(
                f"unknown scope(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}"
            )
        tenant_id = await self.ensure_tenant(tenant)
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24).replace("_", "x").replace("-", "y")
        key_id = new_id("key")
        created = wall_clock()
        async with self.db.transaction() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    prefix=prefix,
                    secret_hash=_hash(secret),
                    scopes=chosen,
                    created_at=created,
                )
            )
            if self.audit is not None:
                entry = AuditEntry(
                    tenant_id=tenant_id,
                    actor=actor,
                    action="key.created",
                    subject=key_id,
                    outcome="ok",
                    data={"name": name, "prefix": prefix, "scopes": chosen},
                )
                await self.audit.append(conn, entry)
        info = KeyInfo(key_id, tenant, name, prefix, chosen, created, None)
        return NewKey(info, f"wk_{prefix}_{secret}")

    async def list(self) -> list[KeyInfo]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(api_keys, tenants.c.name.label("tenant_name"))
                .join(tenants, tenants.c.id == api_keys.c.tenant_id)
                .order_by(api_keys.c.created_at)
            )
            return [
                KeyInfo(r.id, r.tenant_name, r.name, r.prefix, list(r.scopes), r.created_at, r.revoked_at)
                for r in rows
            ]

    async def revoke(self, key: str, *, actor: str = "system") -> KeyInfo:
        """Revoke by id (``key_…``) or prefix."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(api_keys)
                .where((api_keys.c.id == key) | (api_keys.c.prefix == key), api_keys.c.revoked_at.is_(None))
                .values(revoked_at=wall_clock())
                .returning(api_keys.c.id, api_keys.c.tenant_id)
            )
            row = result.first()
            if row is None:
                raise NotFound(f"no active API key {key!r}", code="key_not_found")
            if self.audit is not None:
                entry = AuditEntry(
                    tenant_id=row.tenant_id, actor=actor, action="key.revoked", subject=row.id, outcome="ok"
                )
                await self.audit.append(conn, entry)
        self._cache.clear()
        for info in await self.list():
            if key in (info.id, info.prefix):
                return info
        raise NotFound(f"no API key {key!r}")  # pragma: no cover - just revoked

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        parts = _split(token)
        if parts is None:
            raise Unauthorized("malformed API key", code="invalid_api_key")
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            principal = cached[1]
        else:
            principal = await self._lookup(*parts)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, principal)
        if principal is None:
            raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
        return principal

    async def _lookup(self, prefix: str, secret: str) -> Principal | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        api_keys.c.id, api_keys.c.tenant_id, api_keys.c.secret_hash, api_keys.c.scopes
                    ).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        return Principal(row.id, row.tenant_id, frozenset(row.scopes))
