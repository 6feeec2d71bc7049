"""Redaction and restoration: text and JSON to placeholders before a model sees them, and model
output (tool-call arguments above all) back to the exact real values, JSON- and escape-safe."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from warden.governance.pii.detector import Detector, PiiSpan
from warden.governance.pii.errors import PiiError
from warden.governance.pii.vault import LITERAL_ENTITY, PLACEHOLDER, PiiVault

PII_READ_SCOPE = "pii:read"
"""API-key scope whose holder sees real values in event streams (`reveal`)."""

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)
"""A JSON string literal; only run over text `json.loads` accepted, so every quote found
outside a string opens a terminated one and the scan is linear."""

JsonValue = Any
"""A value of ``json.loads``: dict, list, str, int, float, bool or None."""


# -- spans --------------------------------------------------------------------------------------


def resolve_overlaps(spans: Sequence[PiiSpan]) -> list[PiiSpan]:
    """Non-overlapping spans sorted by start. Among overlapping ones the longest wins, then the
    highest score (an e-mail over the URL inside it, a card number over a date inside it)."""
    ranked = sorted(spans, key=lambda s: (s.entity != _PROTECTED, -(s.end - s.start), -s.score, s.start))
    starts: list[int] = []
    kept: list[PiiSpan] = []
    for span in ranked:
        if span.end <= span.start:
            continue
        i = bisect.bisect_left(starts, span.start)
        if i > 0 and kept[i - 1].end > span.start:
            continue
        if i < len(kept) and kept[i].start < span.end:
            continue
        starts.insert(i, span.start)
        kept.insert(i, span)
    return kept


_PROTECTED = "\x00placeholder"
"""Internal entity of placeholder-shaped text already in the input: it outranks any detection."""


def _placeholder_spans(text: str) -> list[PiiSpan]:
    return [PiiSpan(m.start(), m.end(), _PROTECTED, 1.0, "placeholder") for m in PLACEHOLDER.finditer(text)]


def replace_spans(text: str, spans: Sequence[PiiSpan], vault: PiiVault) -> str:
    """``text`` with each span replaced by its value's placeholder in ``vault``.

    Placeholder-shaped text already in ``text`` is never re-redacted: one this vault issued stays
    as it is (so redacting twice changes nothing, and a user may refer to ``<PERSON_1>``), and one
    it did not issue is vaulted as a literal ``<PLACEHOLDER_n>`` so it can never collide with a
    placeholder issued later, and `restore` gives back exactly the text that arrived.
    """
    pieces: list[str] = []
    cursor = 0
    protected = _placeholder_spans(text)
    spans = [*spans, *_known_spans(text, vault)]
    # Decided before this text allocates anything: "<PERSON_1>" typed next to the first person
    # found here is a literal, not a reference to the placeholder that person is about to get.
    issued = {text[s.start : s.end] for s in protected if text[s.start : s.end] in vault}
    for span in resolve_overlaps([*spans, *protected]):
        value = text[span.start : span.end]
        if span.entity == _PROTECTED:
            replacement = value if value in issued else vault.placeholder_for(value, LITERAL_ENTITY)
        else:
            replacement = vault.placeholder_for(value, span.entity)
        pieces += (text[cursor : span.start], replacement)
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _known_spans(text: str, vault: PiiVault) -> list[PiiSpan]:
    pattern = vault.known_values()
    if pattern is None:
        return []
    return [
        PiiSpan(m.start(), m.end(), vault.entity_of(m[0]) or LITERAL_ENTITY, 1.0, "vault")
        for m in pattern.finditer(text)
    ]


# -- restoring ------------------------------------------------------------------------------


def restore(text: str, vault: PiiVault) -> str:
    """Plain text with this vault's placeholders replaced by their real values, in one pass (a
    restored value is never scanned again); placeholder-shaped text it did not issue is left as is."""

    def value(match: re.Match[str]) -> str:
        real = vault.value_of(match[0])
        return match[0] if real is None else real

    return PLACEHOLDER.sub(value, text)


def restore_json(value: JsonValue, vault: PiiVault) -> JsonValue:
    """A parsed JSON value with placeholders restored in every string, keys included."""
    return _map_strings(value, lambda s: restore(s, vault))


def restore_arguments(arguments: str, vault: PiiVault) -> str:
    """Tool-call arguments (JSON text from the model) with real values put back.

    Only string literals that hold a placeholder change: each is decoded, restored and encoded
    again, so quotes, backslashes, newlines and non-BMP characters in a real value come out
    correctly escaped and everything else keeps its bytes. Placeholders the model wrote with
    ``\\u`` escapes are found too. If the text is not valid JSON, each placeholder is replaced
    by its value escaped for a JSON string, which is right wherever a placeholder can appear.
    """
    if PLACEHOLDER.search(arguments) is None and "\\u" not in arguments:
        return arguments
    try:
        json.loads(arguments)
    except (ValueError, RecursionError):
        return PLACEHOLDER.sub(lambda m: _escaped(vault.value_of(m[0]), m[0]), arguments)

    def literal(match: re.Match[str]) -> str:
        decoded: str = json.loads(match[0])
        restored = restore(decoded, vault)
        return match[0] if restored == decoded else _encode(restored)

    return _JSON_STRING.sub(literal, arguments)


def reveal(value: JsonValue, vault: PiiVault, scopes: Collection[str]) -> JsonValue:
    """What a reader sees of event data or a log record: real values only with ``pii:read``."""
    return restore_json(value, vault) if PII_READ_SCOPE in scopes else value


def _encode(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    try:
        encoded.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only \u escapes can carry it
        return json.dumps(text, ensure_ascii=True)
    return encoded


def _escaped(real: str | None, placeholder: str) -> str:
    return placeholder if real is None else _encode(real)[1:-1]


def _map_strings(value: JsonValue, fn: Callable[[str], str]) -> JsonValue:
    try:
        if isinstance(value, str):
            return fn(value)
        if isinstance(value, dict):
            return {fn(k) if isinstance(k, str) else k: _map_strings(v, fn) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_map_strings(item, fn) for item in value]
        return value
    except RecursionError:
        raise PiiError("the JSON value is nested too deeply to redact", code="pii_too_deep") from None


def _strings(value: JsonValue, out: list[str]) -> list[str]:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                out.append(key)
            _strings(item, out)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings(item, out)
    return out


# -- redacting ------------------------------------------------------------------------------


class PiiRedactor:
    """Detection plus substitution for one deployment; vaults are per session and passed in."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def __repr__(self) -> str:
        return f"PiiRedactor({self.detector!r})"

    async def redact(self, text: str, vault: PiiVault) -> str:
        """``text`` as a model may see it. Detection runs in the detector's pool; substitution
        (cheap) here, so the vault is only touched from the caller's task."""
        (redacted,) = await self.redact_many([text], vault)
        return redacted

    async def redact_many(self, texts: Sequence[str], vault: PiiVault) -> list[str]:
        """Several texts (the new messages of a turn) in one hop to the detector's pool."""
        spans = await self.detector.detect_many(texts)
        return [replace_spans(text, found, vault) for text, found in zip(texts, spans, strict=True)]

    def redact_sync(self, text: str, vault: PiiVault) -> str:
        """Blocking form, for threads, scripts and benchmarks: never call it on the event loop."""
        return replace_spans(text, self.detector.detect_sync(text), vault)

    async def redact_json(self, value: JsonValue, vault: PiiVault) -> JsonValue:
        """A structured tool result with every string (keys too) redacted; numbers, booleans and
        nulls unchanged. All strings go to the pool in one hop."""
        strings = list(dict.fromkeys(_strings(value, [])))
        redacted = dict(zip(strings, await self.redact_many(strings, vault), strict=True))
        return _map_strings(value, lambda s: redacted[s])

    async def redact_arguments(self, arguments: str, vault: PiiVault) -> str:
        """JSON text (e.g. a tool call's arguments shown in an event) with its strings redacted;
        text that is not JSON is redacted as plain text."""
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            return await self.redact(arguments, vault)
        return json.dumps(await self.redact_json(parsed, vault), ensure_ascii=False)
