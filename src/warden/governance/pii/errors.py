"""Errors of the PII vault: both fail closed, so nothing is sent to a model unredacted."""

from __future__ import annotations

from warden.errors import WardenError


class PiiError(WardenError):
    """Redaction could not be done (text too long, detection timed out, vault full)."""

    code = "pii_error"
    http_status = 500


class VaultError(PiiError):
    """A sealed vault could not be opened: wrong key, tampered blob, another session's blob, or
    no key configured."""

    code = "pii_vault_error"
