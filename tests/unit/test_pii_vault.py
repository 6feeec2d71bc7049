"""The per-session PII vault: stable placeholders and sealing (AEAD, bound to the session)."""

from __future__ import annotations

import base64

import pytest

from warden.governance.pii import PiiError, PiiVault, VaultError, VaultKeyring


@pytest.fixture
def keyring() -> VaultKeyring:
    return VaultKeyring.from_text(VaultKeyring.generate())


def test_same_value_gets_the_same_placeholder_for_the_session() -> None:
    vault = PiiVault("s1")
    first = vault.placeholder_for("John Smith", "PERSON")
    vault.placeholder_for("Jane Doe", "PERSON")
    assert vault.placeholder_for("John Smith", "PERSON") == first == "<PERSON_1>"
    assert vault.placeholder_for("John Smith", "ORGANIZATION") == "<PERSON_1>"  # one value, one placeholder


def test_counters_run_per_entity_type() -> None:
    vault = PiiVault("s1")
    assert vault.placeholder_for("a@example.com", "EMAIL_ADDRESS") == "<EMAIL_ADDRESS_1>"
    assert vault.placeholder_for("Jane", "PERSON") == "<PERSON_1>"
    assert vault.placeholder_for("b@example.com", "EMAIL_ADDRESS") == "<EMAIL_ADDRESS_2>"
    assert vault.counts() == {"EMAIL_ADDRESS": 2, "PERSON": 1}


def test_value_of_unknown_placeholder_is_none() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    assert vault.value_of("<PERSON_1>") == "Jane"
    assert vault.value_of("<PERSON_2>") is None


def test_repr_never_shows_values_or_keys() -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("4111 1111 1111 1111", "CREDIT_CARD")
    assert "4111" not in repr(vault)
    assert all("4111" not in repr(entry) for entry in vault)
    key = VaultKeyring.generate()
    assert key not in repr(VaultKeyring.from_text(key))


def test_seal_and_open_round_trip_keeps_numbering(keyring: VaultKeyring) -> None:
    vault = PiiVault("s1")
    for value, entity in [
        ("Jane", "PERSON"),
        ('a "quoted"\\ value\n', "PERSON"),
        ("x@y.io", "EMAIL_ADDRESS"),
    ]:
        vault.placeholder_for(value, entity)
    opened = PiiVault.open(vault.seal(keyring), session_id="s1", keyring=keyring)
    assert [(e.placeholder, e.value) for e in opened] == [(e.placeholder, e.value) for e in vault]
    assert opened.placeholder_for("New Person", "PERSON") == "<PERSON_3>"


def test_sealed_blob_contains_no_plaintext(keyring: VaultKeyring) -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("john.smith@acme.com", "EMAIL_ADDRESS")
    blob = vault.seal(keyring)
    assert b"john" not in blob
    assert b"EMAIL" not in blob


def test_blob_of_another_session_is_rejected(keyring: VaultKeyring) -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    with pytest.raises(VaultError, match="another session"):
        PiiVault.open(vault.seal(keyring), session_id="s2", keyring=keyring)


def test_wrong_key_is_rejected(keyring: VaultKeyring) -> None:
    blob = PiiVault("s1").seal(keyring)
    other = VaultKeyring.from_text(VaultKeyring.generate())
    with pytest.raises(VaultError, match="not configured"):
        PiiVault.open(blob, session_id="s1", keyring=other)


def test_tampered_blob_is_rejected(keyring: VaultKeyring) -> None:
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    blob = bytearray(vault.seal(keyring))
    blob[-20] ^= 0x01
    with pytest.raises(VaultError, match="authentication"):
        PiiVault.open(bytes(blob), session_id="s1", keyring=keyring)


@pytest.mark.parametrize("blob", [b"", b"WPV\x01", b"XXXX" + bytes(64), b"WPV\x02" + bytes(64)])
def test_garbage_blob_is_rejected(keyring: VaultKeyring, blob: bytes) -> None:
    with pytest.raises(VaultError):
        PiiVault.open(blob, session_id="s1", keyring=keyring)


def test_rotated_keyring_opens_blobs_of_the_old_key() -> None:
    old, new = VaultKeyring.generate(), VaultKeyring.generate()
    vault = PiiVault("s1")
    vault.placeholder_for("Jane", "PERSON")
    blob = vault.seal(VaultKeyring.from_text(old))
    rotated = VaultKeyring.from_text(f"{new},{old}")
    assert PiiVault.open(blob, session_id="s1", keyring=rotated).value_of("<PERSON_1>") == "Jane"
    assert rotated.current_id == VaultKeyring.from_text(new).current_id


@pytest.mark.parametrize(
    "text",
    ["", "not base64!", base64.b64encode(b"short").decode()],
)
def test_bad_key_configuration_is_an_error(text: str) -> None:
    with pytest.raises(VaultError):
        VaultKeyring.from_text(text)


def test_missing_key_env_names_the_variable() -> None:
    with pytest.raises(VaultError, match="WARDEN_PII_KEY"):
        VaultKeyring.from_env("WARDEN_PII_KEY", environ={})


def test_vault_is_bounded() -> None:
    vault = PiiVault("s1", max_entries=2)
    vault.placeholder_for("a", "PERSON")
    vault.placeholder_for("b", "PERSON")
    vault.placeholder_for("a", "PERSON")  # known values do not count again
    with pytest.raises(PiiError, match="full"):
        vault.placeholder_for("c", "PERSON")
