"""The PII vault as the runtime uses it: vaults opened from and sealed into the database, one per
session (or per task without a session), and the three moves of invariant 6 — redact what
arrives, restore what leaves for a tool, reveal only to a reader holding ``pii:read``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.events.log import Tx
from warden.governance.pii.config import PiiConfig
from warden.governance.pii.detector import PiiDetector
from warden.governance.pii.errors import VaultError
from warden.governance.pii.redactor import PII_READ_SCOPE, PiiRedactor, restore_json
from warden.governance.pii.vault import PLACEHOLDER, PiiVault, VaultKeyring
from warden.store.database import Database
from warden.store.schema import pii_vaults


@dataclass
class PiiGuard:
    """One process's PII machinery: the key ring (every process) and, in processes that run
    agents, the detector. API-only processes reveal but never detect."""

    config: PiiConfig
    keyring: VaultKeyring
    redactor: PiiRedactor | None = None

    @classmethod
    def from_config(
        cls, config: PiiConfig, *, detect: bool = True, environ: Mapping[str, str] | None = None
    ) -> PiiGuard | None:
        """None when PII redaction is off; `VaultError` when it is on and the key is missing."""
        if not config.enabled:
            return None
        keyring = VaultKeyring.from_env(config.key_env, environ)
        return cls(config, keyring, PiiRedactor(PiiDetector(config)) if detect else None)

    async def load(self) -> None:
        """Load the language model now (a second or two) rather than on a task's first step."""
        if self.redactor is not None and isinstance(self.redactor.detector, PiiDetector):
            await self.redactor.detector.load()

    def close(self) -> None:
        if self.redactor is not None and isinstance(self.redactor.detector, PiiDetector):
            self.redactor.detector.close()

    # -- storage ----------------------------------------------------------------------------

    async def open_vault(self, conn: AsyncConnection, scope_id: str) -> SessionVault:
        """The scope's vault as last sealed, or a new one. A blob that fails to open (another
        key, tampering) is an error: starting afresh would give old placeholders new meanings."""
        row = (await conn.execute(select(pii_vaults.c.blob).where(pii_vaults.c.scope_id == scope_id))).first()
        if row is None:
            return SessionVault(PiiVault(scope_id), sealed=0)
        vault = PiiVault.open(bytes(row.blob), session_id=scope_id, keyring=self.keyring)
        return SessionVault(vault, sealed=len(vault))

    async def seal(self, tx: Tx, held: SessionVault, *, tenant_id: str) -> None:
        """Store the vault if it grew since it was last sealed: call it in the transaction that
        writes content holding its new placeholders, so both commit or neither does."""
        vault = held.vault
        count = len(vault)
        if count == held.sealed:
            return
        insert = sqlite.insert if tx.db.is_sqlite else postgresql.insert
        blob = vault.seal(self.keyring)
        now = tx.db.now()
        statement = insert(pii_vaults).values(
            scope_id=vault.session_id, tenant_id=tenant_id, entries=count, blob=blob, updated_at=now
        )
        # Entries only grow within a scope (one active task per session), so a larger vault
        # never loses to a smaller one written late by an interrupted task.
        statement = statement.on_conflict_do_update(
            index_elements=["scope_id"],
            set_={"entries": count, "blob": blob, "updated_at": now},
            where=pii_vaults.c.entries <= count,
        )
        await tx.write(statement)
        held.sealed = count

    # -- reading ------------------------------------------------------------------------------

    def reader(self, db: Database, scope_id: str, scopes: Collection[str]) -> VaultReader | None:
        """What reveals the scope's real values to a caller with ``scopes``: None without
        ``pii:read``, so callers show placeholders."""
        return VaultReader(self, db, scope_id) if can_read_pii(scopes) else None


class VaultReader:
    """Reveals one scope's values to one ``pii:read`` stream: the vault is read once and read
    again only when an event holds a placeholder it does not know yet (the task issued it after
    the last read; it is sealed in the transaction that wrote the event, so it is there)."""

    def __init__(self, guard: PiiGuard, db: Database, scope_id: str) -> None:
        self.guard = guard
        self.db = db
        self.scope_id = scope_id
        self._vault: PiiVault | None = None

    async def reveal(self, value: Any) -> Any:
        if not _has_placeholder(value):
            return value
        if self._vault is None or any(p not in self._vault for p in _placeholders(value)):
            async with self.db.read() as conn:
                self._vault = (await self.guard.open_vault(conn, self.scope_id)).vault
        return restore_json(value, self._vault)


@dataclass
class SessionVault:
    """A vault held by one task's loop, with how many entries the database already has."""

    vault: PiiVault
    sealed: int


def can_read_pii(scopes: Collection[str]) -> bool:
    """Only an explicit ``pii:read`` reveals: an ``admin`` key does not imply it (least privilege;
    an administrator grants it to a key on purpose)."""
    return PII_READ_SCOPE in scopes


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _has_placeholder(value: Any) -> bool:
    return PLACEHOLDER.search(_text(value)) is not None


def _placeholders(value: Any) -> set[str]:
    return set(PLACEHOLDER.findall(_text(value)))


def mask_known(text: str, vault: PiiVault) -> str:
    """``text`` with every value the vault already holds replaced by its placeholder, without
    detection: for Warden's own messages (a policy's reason, a schema error) that may quote a
    tool argument after its real values were restored."""
    for entry in sorted(vault, key=lambda e: len(e.value), reverse=True):
        if entry.value in text:
            text = text.replace(entry.value, entry.placeholder)
    return text


__all__ = ["PiiGuard", "SessionVault", "VaultError", "VaultReader", "can_read_pii", "mask_known"]
