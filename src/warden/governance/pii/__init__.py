"""The PII vault (issue 5): models see stable per-session placeholders (``<PERSON_1>``), tools get
the real values back, and the mapping is kept sealed per session (invariant 6).

Importing this package is cheap: Presidio and spaCy load on the first detection (or `load`).
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
