"""The PII vault (issue 5): models see stable per-session placeholders (``<PERSON_1>``), tools get
the real values back, and the mapping is kept sealed per session (invariant 6).

Importing this package is cheap: Presidio and spaCy load on the first detection (or `load`).

Not yet called by the gate. The wiring it is built for:

1. Once per process: ``VaultKeyring.from_env(cfg.key_env)`` (fails clearly without a key),
   ``PiiDetector(cfg)`` loaded at start, ``PiiRedactor(detector)``.
2. Per session: ``PiiVault.open(blob, session_id=…, keyring=…)`` or a new ``PiiVault``; seal it
   with ``vault.seal(keyring)`` in the transaction that journals the content that introduced
   new placeholders, so a resumed task restores the same mapping.
3. Inbound content (user input, tool results) is redacted once, when it arrives
   (``redact_many`` / ``redact_json``), and stored redacted; the model only ever sees that.
4. Tool-call arguments: ``restore_arguments(raw_json, vault)`` for the tool; events and the
   journal keep the placeholders.
5. Streams: ``reveal(event_data, vault, scopes)`` only for a caller holding ``pii:read``; logs and
   audit never reveal. ``PiiError``/``VaultError`` fail the model call closed.
"""

from warden.governance.pii.config import DEFAULT_ENTITIES, PiiConfig, PiiPattern
from warden.governance.pii.detector import Detector, PiiDetector, PiiSpan, build_analyzer
from warden.governance.pii.errors import PiiError, VaultError
from warden.governance.pii.redactor import (
    PII_READ_SCOPE,
    PiiRedactor,
    replace_spans,
    resolve_overlaps,
    restore,
    restore_arguments,
    restore_json,
    reveal,
)
from warden.governance.pii.vault import PLACEHOLDER, PiiVault, VaultEntry, VaultKeyring

__all__ = [
    "DEFAULT_ENTITIES",
    "PII_READ_SCOPE",
    "PLACEHOLDER",
    "Detector",
    "PiiConfig",
    "PiiDetector",
    "PiiError",
    "PiiPattern",
    "PiiRedactor",
    "PiiSpan",
    "PiiVault",
    "VaultEntry",
    "VaultError",
    "VaultKeyring",
    "build_analyzer",
    "replace_spans",
    "resolve_overlaps",
    "restore",
    "restore_arguments",
    "restore_json",
    "reveal",
]
