"""Redaction to placeholders and restoration to exact values, JSON- and escape-safe."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence

import pytest

from warden.governance.pii import (
    PiiRedactor,
    PiiSpan,
    PiiVault,
    replace_spans,
    resolve_overlaps,
    restore,
    restore_arguments,
    restore_json,
    reveal,
)


def spans_of(text: str, found: dict[str, str]) -> list[PiiSpan]:
    """Spans of every occurrence of each value in ``found`` (value → entity)."""
    return [
        PiiSpan(m.start(), m.end(), entity, 0.9)
        for value, entity in found.items()
        for m in re.finditer(re.escape(value), text)
    ]


class ExactDetector:
    """Finds given values verbatim: the unit tests' stand-in for Presidio (tested for real in
    tests/integration/test_pii_detector.py)."""

    def __init__(self, found: dict[str, str]) -> None:
        self.found = found

    def detect_sync(self, text: str) -> list[PiiSpan]:
        return spans_of(text, self.found)

    async def detect_many(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        return [self.detect_sync(text) for text in texts]


def redact(text: str, vault: PiiVault, found: dict[str, str]) -> str:
    return replace_spans(text, spans_of(text, found), vault)


def test_placeholders_are_stable_across_messages() -> None:
    vault = PiiVault("s1")
    found = {"John Smith": "PERSON", "john@acme.com": "EMAIL_ADDRESS", "Jane Roe": "PERSON"}
    first = redact("John Smith (john@acme.com) met Jane Roe.", vault, found)
    second = redact("Jane Roe wrote to John Smith again.", vault, found)
    assert first == "<PERSON_1> (<EMAIL_ADDRESS_1>) met <PERSON_2>."
    assert second == "<PERSON_2> wrote to <PERSON_1> again."


def test_restore_gives_back_the_exact_text() -> None:
    vault = PiiVault("s1")
    text = 'Dear Ann "O\'Neil" \\ Müller 😀,\nyour card 4111-1111-1111-1111 …'
    found = {'Ann "O\'Neil" \\ Müller 😀': "PERSON", "4111-1111-1111-1111": "CREDIT_CARD"}
    redacted = redact(text, vault, found)
    assert "Ann" not in redacted
    assert "4111" not in redacted
    assert restore(redacted, vault) == text


def test_longest_overlapping_span_wins() -> None:
    spans = [
        PiiSpan(10, 29, "EMAIL_ADDRESS", 1.0),
        PiiSpan(15, 29, "URL", 0.5),
        PiiSpan(10, 14, "PERSON", 0.85),
    ]
    assert resolve_overlaps(spans) == [spans[0]]


def test_equal_length_overlap_goes_to_the_higher_score() -> None:
    spans = [PiiSpan(0, 9, "DATE_TIME", 0.6), PiiSpan(0, 9, "US_SSN", 0.85), PiiSpan(9, 12, "PERSON", 0.4)]
    assert resolve_overlaps(spans) == [spans[1], spans[2]]


def test_restore_leaves_unknown_placeholders_untouched() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    assert restore("<PERSON_1> and <PERSON_2> and <person_1> and <PERSON_01>", vault) == (
        "Jane and <PERSON_2> and <person_1> and <PERSON_01>"
    )


def test_placeholder_typed_in_user_text_is_kept_literal() -> None:
    vault = PiiVault("s1")
    text = "Hi, I am John Smith. Please forward <PERSON_1> and <CREDIT_CARD_7> to me."
    redacted = redact(text, vault, {"John Smith": "PERSON"})
    assert redacted == "Hi, I am <PERSON_1>. Please forward <PLACEHOLDER_1> and <PLACEHOLDER_2> to me."
    assert restore(redacted, vault) == text
    assert restore_arguments(json.dumps({"q": "<PLACEHOLDER_1>"}), vault) == json.dumps({"q": "<PERSON_1>"})


def test_placeholder_this_vault_issued_passes_through_so_redaction_is_idempotent() -> None:
    vault = PiiVault("s1")
    found = {"John Smith": "PERSON"}
    once = redact("John Smith said <PERSON_9>", vault, found)
    assert redact(once, vault, found) == once
    assert redact("Tell <PERSON_1> hello", vault, found) == "Tell <PERSON_1> hello"


@pytest.mark.parametrize(
    "value",
    [
        'O"Brien',
        "back\\slash\\",
        "line one\nline two\ttab",
        "snowman ☃ and 𝄞 and 😀",
        "\u2028\u2029 separators",
        "</script><PERSON_1>",
        '\\"',
        "nul\x00byte",
    ],
)
def test_restored_arguments_are_valid_json_with_the_exact_value(value: str) -> None:
    vault = PiiVault("s1")
    placeholder = vault.placeholder_for(value, "PERSON")
    arguments = json.dumps({"name": placeholder, "note": f"to {placeholder}!", "n": 1.50})
    restored = restore_arguments(arguments, vault)
    assert json.loads(restored) == {"name": value, "note": f"to {value}!", "n": 1.5}


def test_restore_arguments_keeps_untouched_bytes_verbatim() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    arguments = '{ "a" : 1.50e+2,\n  "b": "\\u00e9 <PERSON_1>", "c": "<PERSON_2>" }'
    assert restore_arguments(arguments, vault) == '{ "a" : 1.50e+2,\n  "b": "é Jane", "c": "<PERSON_2>" }'


def test_restore_arguments_finds_unicode_escaped_placeholders() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for('Jane "J" Doe', "PERSON")
    restored = restore_arguments('{"to": "\\u003cPERSON_1\\u003e"}', vault)
    assert json.loads(restored) == {"to": 'Jane "J" Doe'}


def test_restore_arguments_in_keys_and_nested_values() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("a@b.io", "EMAIL_ADDRESS")
    arguments = json.dumps({"<EMAIL_ADDRESS_1>": [{"cc": ["<EMAIL_ADDRESS_1>", None, True]}]})
    assert json.loads(restore_arguments(arguments, vault)) == {"a@b.io": [{"cc": ["a@b.io", None, True]}]}


def test_malformed_arguments_still_get_escaped_values() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for('say "hi"\n', "PERSON")
    restored = restore_arguments('{"to": "<PERSON_1>", ', vault)
    assert restored == '{"to": "say \\"hi\\"\\n", '


def test_arguments_without_placeholders_are_returned_as_is() -> None:
    vault = PiiVault("s1")
    arguments = '{"x":   "y"}'
    assert restore_arguments(arguments, vault) is arguments


def test_restore_json_walks_structures() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    assert restore_json({"k": ["<PERSON_1>", 3, {"<PERSON_1>": "x"}]}, vault) == {
        "k": ["Jane", 3, {"Jane": "x"}]
    }


async def test_redact_json_redacts_every_string_and_keeps_other_types() -> None:
    vault = PiiVault("s1")
    redactor = PiiRedactor(ExactDetector({"Jane Roe": "PERSON", "jane@roe.io": "EMAIL_ADDRESS"}))
    result = await redactor.redact_json(
        {"user": {"name": "Jane Roe", "jane@roe.io": True, "age": 41, "tags": ["Jane Roe", None]}}, vault
    )
    assert result == {
        "user": {"name": "<PERSON_1>", "<EMAIL_ADDRESS_1>": True, "age": 41, "tags": ["<PERSON_1>", None]}
    }


async def test_redact_arguments_keeps_json_valid() -> None:
    vault = PiiVault("s1")
    redactor = PiiRedactor(ExactDetector({'Ann "A"': "PERSON"}))
    shown = await redactor.redact_arguments(json.dumps({"to": 'Ann "A"'}), vault)
    assert json.loads(shown) == {"to": "<PERSON_1>"}
    assert json.loads(restore_arguments(shown, vault)) == {"to": 'Ann "A"'}


def test_reveal_needs_the_pii_read_scope() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    event = {"type": "model.message", "data": {"content": "Hello <PERSON_1>"}}
    assert reveal(event, vault, scopes={"tasks:read"}) == event
    assert reveal(event, vault, scopes={"pii:read"}) == {
        "type": "model.message",
        "data": {"content": "Hello Jane"},
    }


def test_huge_hostile_inputs_are_handled_in_linear_time() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    hostile = [
        '"\\' * 200_000,  # unterminated string literals everywhere
        "<PERSON_" * 200_000,  # placeholder prefixes that never close
        "<" + "A" * 400_000 + "_1>",  # an over-long entity name
        "[" * 100_000 + '"<PERSON_1>"' + "]" * 100_000,  # nested too deeply for json
        json.dumps(["<PERSON_1>"] * 50_000),
    ]
    for text in hostile:
        started = time.perf_counter()
        restore(text, vault)
        restore_arguments(text, vault)
        assert time.perf_counter() - started < 2.0, text[:20]
    assert restore_arguments("[" * 100_000 + '"<PERSON_1>"' + "]" * 100_000, vault).count("Jane") == 1
