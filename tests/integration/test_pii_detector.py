"""The real detector: Presidio with spaCy's en_core_web_sm from its PyPI package, offline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from warden.governance.pii import (
    PiiConfig,
    PiiDetector,
    PiiError,
    PiiPattern,
    PiiRedactor,
    PiiVault,
    restore,
    restore_arguments,
)

CONFIG = PiiConfig(
    enabled=True,
    patterns=[PiiPattern(name="customer", entity="CUSTOMER_ID", regex=r"\bCUST-\d{6}\b", score=0.9)],
    allow_list=["support@warden.dev"],
    chunk_chars=2_000,
    max_chars=200_000,
)


@pytest.fixture(scope="module")
def detector() -> Iterator[PiiDetector]:
    detector = PiiDetector(CONFIG)
    yield detector
    detector.close()


def found(detector: PiiDetector, text: str) -> set[tuple[str, str]]:
    return {(s.entity, text[s.start : s.end]) for s in detector.detect_sync(text)}


def test_finds_person_email_and_phone(detector: PiiDetector) -> None:
    text = "Please call John Smith on (415) 867-5309 or write to john.smith@acme.com."
    assert found(detector, text) >= {
        ("PERSON", "John Smith"),
        ("PHONE_NUMBER", "(415) 867-5309"),
        ("EMAIL_ADDRESS", "john.smith@acme.com"),
    }


def test_email_is_one_span_not_urls_inside_it(detector: PiiDetector) -> None:
    vault = PiiVault("s1")
    text = "write to john.smith@acme.com today"
    redacted = PiiRedactor(detector).redact_sync(text, vault)
    assert redacted == "write to <EMAIL_ADDRESS_1> today"


def test_luhn_valid_card_is_found_and_invalid_one_is_not(detector: PiiDetector) -> None:
    text = "Card 4111 1111 1111 1111 is mine; 4111 1111 1111 1112 is a typo."
    cards = {value for entity, value in found(detector, text) if entity == "CREDIT_CARD"}
    assert cards == {"4111 1111 1111 1111"}


def test_valid_iban_is_found_and_bad_checksum_is_not(detector: PiiDetector) -> None:
    text = "Pay DE89370400440532013000 or GB82 WEST 1234 5698 7654 32, not DE89370400440532013001."
    ibans = {value for entity, value in found(detector, text) if entity == "IBAN_CODE"}
    assert ibans == {"DE89370400440532013000", "GB82 WEST 1234 5698 7654 32"}


def test_custom_pattern_is_redacted(detector: PiiDetector) -> None:
    assert ("CUSTOMER_ID", "CUST-123456") in found(detector, "Ticket for CUST-123456 opened")


def test_allow_listed_value_is_never_redacted(detector: PiiDetector) -> None:
    text = "Mail support@warden.dev or jane.roe@example.org"
    emails = {value for entity, value in found(detector, text) if entity == "EMAIL_ADDRESS"}
    assert emails == {"jane.roe@example.org"}


def test_entities_not_configured_are_not_redacted(detector: PiiDetector) -> None:
    entities = {
        entity for entity, _ in found(detector, "Maria flew from Paris to Berlin on Monday with Acme Corp.")
    }
    assert entities <= {"PERSON"}


def test_detection_never_fetches_from_the_network(
    detector: PiiDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("PII detection tried to use the network")

    monkeypatch.setattr(requests.Session, "request", no_network)
    fresh = PiiDetector(CONFIG)
    try:
        assert ("EMAIL_ADDRESS", "ops@bank.co.uk") in found(fresh, "ops@bank.co.uk")
    finally:
        fresh.close()


def test_entity_across_a_window_boundary_is_found_whole(detector: PiiDetector) -> None:
    filler = "lorem ipsum dolor sit amet " * 74  # about 2,000 characters: the window size
    text = filler + "write to jane.roe@example.org please " + filler
    assert ("EMAIL_ADDRESS", "jane.roe@example.org") in found(detector, text)


def test_text_over_the_limit_fails_closed(detector: PiiDetector) -> None:
    with pytest.raises(PiiError, match="exceeds"):
        detector.detect_sync("x" * 200_001)


async def test_async_detection_runs_off_the_event_loop_thread(detector: PiiDetector) -> None:
    threads: list[str] = []
    original = detector.detect_sync

    def spy(text: str) -> list:  # type: ignore[type-arg]
        threads.append(threading.current_thread().name)
        return original(text)

    detector.detect_sync = spy  # type: ignore[method-assign]
    try:
        await detector.detect("John Smith")
    finally:
        del detector.detect_sync
    assert threads and threads[0].startswith("warden-pii")


async def test_round_trip_through_a_model_and_a_tool(detector: PiiDetector) -> None:
    vault = PiiVault("session-1")
    redactor = PiiRedactor(detector)
    user = 'Email Jane "JJ" Roe at jane.roe@example.org about card 4111-1111-1111-1111.'
    seen_by_model = await redactor.redact(user, vault)
    assert "jane.roe@example.org" not in seen_by_model
    assert "4111" not in seen_by_model
    assert restore(seen_by_model, vault) == user
    email = vault.placeholder_of("jane.roe@example.org")
    model_arguments = json.dumps(
        {"to": email, "body": f"Hello,\nabout {vault.placeholder_of('4111-1111-1111-1111')}"}
    )
    tool_arguments = json.loads(restore_arguments(model_arguments, vault))
    assert tool_arguments == {"to": "jane.roe@example.org", "body": "Hello,\nabout 4111-1111-1111-1111"}
    tool_result = await redactor.redact_json({"sent_to": "jane.roe@example.org", "id": 7}, vault)
    assert tool_result == {"sent_to": email, "id": 7}


def test_a_local_number_counts_only_after_a_word_that_says_phone(detector: PiiDetector) -> None:
    assert ("PHONE_NUMBER", "555-0123") in found(detector, "Call John Smith at 555-0123 please")
    assert ("PHONE_NUMBER", "555-0123") in found(detector, "Send an SMS to 555-0123: we are late")
    assert not any(e == "PHONE_NUMBER" for e, _ in found(detector, "Part 555-0123 costs 3 dollars"))


def test_a_value_the_vault_holds_is_redacted_wherever_it_reappears(detector: PiiDetector) -> None:
    redactor = PiiRedactor(detector)
    vault = PiiVault("s")
    assert redactor.redact_sync("Call John Smith at 555-0123", vault) == "Call <PERSON_1> at <PHONE_NUMBER_1>"
    # No context word, inside JSON: detection alone would miss it; the vault does not.
    assert (
        redactor.redact_sync('{"to": "555-0123", "ok": true}', vault)
        == '{"to": "<PHONE_NUMBER_1>", "ok": true}'
    )
    assert redactor.redact_sync("order 1555-01234", vault) == "order 1555-01234"  # whole words only


def test_patterns_only_mode_needs_no_language_model() -> None:
    with pytest.raises(ValidationError, match="PERSON"):
        PiiConfig(enabled=True, ner=False)
    config = PiiConfig(enabled=True, ner=False, entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"])
    fast = PiiDetector(config)
    try:
        spans = {
            (s.entity, "x")
            for s in fast.detect_sync("Mail jane@example.com or call 555-0123, card 4111 1111 1111 1111")
        }
        assert spans == {("EMAIL_ADDRESS", "x"), ("PHONE_NUMBER", "x"), ("CREDIT_CARD", "x")}
        assert fast.detect_sync("John Smith lives in Paris") == []
    finally:
        fast.close()
