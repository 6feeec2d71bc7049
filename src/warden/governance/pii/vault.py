"""The per-session PII vault: real value ↔ stable placeholder (``<PERSON_1>``), sealed with AEAD
(AES-256-GCM) under a configured key and bound to its session, so it can be stored with the session."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from warden.governance.pii.config import ENTITY_NAME
from warden.governance.pii.errors import PiiError, VaultError

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]{0,39}_[1-9][0-9]{0,8}>")
"""What a placeholder looks like; bounded so scanning any text is linear."""

LITERAL_ENTITY = "PLACEHOLDER"
"""Entity of text that already looked like a placeholder when it arrived (see ``redactor``)."""

_MAGIC = b"WPV\x01"
"""Blob format and version: magic ``WPV``, version 1, then key id, nonce, ciphertext + tag."""
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_KEY_BYTES = 32


def _key_id(key: bytes) -> bytes:
    # A fingerprint, not the key: names which configured key sealed a blob, so keys can rotate.
    return hashlib.sha256(b"warden.pii.vault.key-id\x00" + key).digest()[:_KEY_ID_BYTES]


class VaultKeyring:
    """The vault keys: the first seals, every one opens (rotation: prepend a new key, re-seal,
    then drop the old one)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[bytes] | tuple[bytes, ...]) -> None:
        if not keys:
            raise VaultError("no PII vault key is configured")
        for key in keys:
            if len(key) != _KEY_BYTES:
                raise VaultError(f"a PII vault key must be {_KEY_BYTES} bytes, got {len(key)}")
        self._keys: dict[bytes, bytes] = {}
        for key in keys:  # insertion order: the first key seals
            self._keys.setdefault(_key_id(key), key)

    @classmethod
    def from_text(cls, text: str) -> VaultKeyring:
        """Comma-separated base64 keys of 32 bytes each."""
        keys: list[bytes] = []
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                keys.append(base64.b64decode(part.strip(), validate=True))
            except (binascii.Error, ValueError) as exc:
                raise VaultError("a PII vault key is not valid base64") from exc
        return cls(keys)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> VaultKeyring:
        value = (os.environ if environ is None else environ).get(name, "")
        if not value.strip():
            raise VaultError(
                f"the PII vault key is missing: set {name} to a base64 32-byte key "
                "(python -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
            )
        return cls.from_text(value)

    @staticmethod
    def generate() -> str:
        """A new random key, base64-encoded, for configuration."""
        return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")

    @property
    def current_id(self) -> str:
        return next(iter(self._keys)).hex()

    def _sealing(self) -> tuple[bytes, bytes]:
        key_id = next(iter(self._keys))
        return key_id, self._keys[key_id]

    def _opening(self, key_id: bytes) -> bytes | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"VaultKeyring(ids={[key_id.hex() for key_id in self._keys]})"


@dataclass(frozen=True, slots=True)
class VaultEntry:
    placeholder: str
    entity: str
    value: str

    def __repr__(self) -> str:  # the value never reaches a log through a repr
        return f"VaultEntry({self.placeholder!r}, entity={self.entity!r}, value=<{len(self.value)} chars>)"


class PiiVault:
    """One session's mapping. One value has one placeholder for the whole session: the entity
    type it was first found as decides the name, and counters run per entity type.

    Thread-safe; the repr shows counts, never values.
    """

    __slots__ = ("_by_placeholder", "_by_value", "_counters", "_known", "_lock", "max_entries", "session_id")

    def __init__(self, session_id: str, *, max_entries: int = 100_000) -> None:
        if not session_id:
            raise ValueError("a vault belongs to a session: session_id is required")
        self.session_id = session_id
        self.max_entries = max_entries
        self._by_value: dict[str, VaultEntry] = {}
        self._by_placeholder: dict[str, VaultEntry] = {}
        self._counters: dict[str, int] = {}
        self._known: tuple[int, re.Pattern[str] | None] = (0, None)
        self._lock = threading.Lock()

    # -- mapping ----------------------------------------------------------------------------

    def placeholder_for(self, value: str, entity: str) -> str:
        """The placeholder of ``value``, allocating ``<ENTITY_n>`` the first time it is seen."""
        if not value:
            raise ValueError("cannot vault an empty value")
        with self._lock:
            entry = self._by_value.get(value)
            if entry is not None:
                return entry.placeholder
            if not ENTITY_NAME.match(entity):
                raise ValueError(f"{entity!r} is not an upper-case entity type")
            if len(self._by_value) >= self.max_entries:
                raise PiiError(
                    f"the session's PII vault is full ({self.max_entries} values)", code="pii_vault_full"
                )
            number = self._counters.get(entity, 0) + 1
            self._counters[entity] = number
            entry = VaultEntry(f"<{entity}_{number}>", entity, value)
            self._by_value[value] = entry
            self._by_placeholder[entry.placeholder] = entry
            return entry.placeholder

    def value_of(self, placeholder: str) -> str | None:
        """The real value behind ``placeholder``, or None if this vault never issued it."""
        entry = self._by_placeholder.get(placeholder)
        return entry.value if entry is not None else None

    def placeholder_of(self, value: str) -> str | None:
        """The placeholder already issued for ``value``, if any (allocates nothing)."""
        entry = self._by_value.get(value)
        return entry.placeholder if entry is not None else None

    def known_values(self) -> re.Pattern[str] | None:
        """A pattern matching every value the vault holds as a whole word (longest first), so a
        value found once is redacted wherever it appears again, even where detection would miss
        it (a bare number in a tool's JSON). None while the vault is empty."""
        with self._lock:
            count, pattern = self._known
            if count == len(self._by_value):
                return pattern
            values = sorted(
                (v for v, e in self._by_value.items() if e.entity != LITERAL_ENTITY), key=len, reverse=True
            )
            alternation = "|".join(re.escape(v) for v in values)
            pattern = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)") if values else None
            self._known = (len(self._by_value), pattern)
            return pattern

    def entity_of(self, value: str) -> str | None:
        entry = self._by_value.get(value)
        return entry.entity if entry is not None else None

    def __contains__(self, placeholder: object) -> bool:
        return placeholder in self._by_placeholder

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def __iter__(self) -> Iterator[VaultEntry]:
        return iter(list(self._by_placeholder.values()))

    def counts(self) -> dict[str, int]:
        """Placeholders issued per entity type."""
        return dict(self._counters)

    def __repr__(self) -> str:
        return f"PiiVault(session_id={self.session_id!r}, entries={len(self)}, entities={self.counts()})"

    # -- sealing ----------------------------------------------------------------------------

    def _aad(self, key_id: bytes) -> bytes:
        # The session id is authenticated, so a blob moved to another session fails to open.
        return _MAGIC + key_id + b"session\x00" + self.session_id.encode("utf-8")

    def seal(self, keyring: VaultKeyring) -> bytes:
        """The vault encrypted and authenticated: ``WPV1 | key id | nonce | ciphertext+tag``."""
        with self._lock:
            entries = [[e.placeholder, e.entity, e.value] for e in self._by_placeholder.values()]
        plaintext = json.dumps({"entries": entries}, ensure_ascii=False, separators=(",", ":"))
        key_id, key = keyring._sealing()
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8", "surrogatepass"), self._aad(key_id))
        return _MAGIC + key_id + nonce + ciphertext

    @classmethod
    def open(
        cls, blob: bytes, *, session_id: str, keyring: VaultKeyring, max_entries: int = 100_000
    ) -> PiiVault:
        """Decrypt a sealed vault of ``session_id``; `VaultError` if it is not exactly that."""
        vault = cls(session_id, max_entries=max_entries)
        header = len(_MAGIC) + _KEY_ID_BYTES + _NONCE_BYTES
        if len(blob) < header + 16 or not blob.startswith(_MAGIC):
            raise VaultError("not a sealed PII vault (unknown format or version)")
        key_id = blob[len(_MAGIC) : len(_MAGIC) + _KEY_ID_BYTES]
        nonce = blob[len(_MAGIC) + _KEY_ID_BYTES : header]
        key = keyring._opening(key_id)
        if key is None:
            raise VaultError(
                f"the PII vault was sealed with a key that is not configured (id {key_id.hex()})"
            )
        try:
            plaintext = AESGCM(key).decrypt(nonce, blob[header:], vault._aad(key_id))
        except InvalidTag:
            raise VaultError(
                "the PII vault failed authentication: tampered, or sealed for another session"
            ) from None
        try:
            entries = json.loads(plaintext.decode("utf-8", "surrogatepass"))["entries"]
            for placeholder, entity, value in entries:
                if vault.placeholder_for(value, entity) != placeholder:
                    raise ValueError("placeholder numbering is inconsistent")
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultError("the PII vault's content is malformed") from exc
        return vault
