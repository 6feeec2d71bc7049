"""Configuration of the PII vault (issue 5): which entities to find, how sure to be, what never to
redact, extra patterns, and where the vault key comes from. Attached to ``WardenConfig`` as ``pii``."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENTITY_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
"""Entity types are upper-case identifiers: they become part of placeholders (``<PERSON_1>``)."""

DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)
"""Identifiers of a person or an account. Places, organisations and dates are off by default:
they are rarely secret and the model usually needs them to do its job."""


NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})
"""Entity types only spaCy's named-entity model finds (no pattern recognizer exists for them)."""


class PiiPattern(BaseModel):
    """A custom regular-expression recognizer, e.g. an internal customer number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    """Shown in detection metadata; unique within ``patterns``."""
    entity: str
    """The entity type it finds; its placeholders are ``<ENTITY_n>``."""
    regex: str = Field(min_length=1, max_length=2000)
    """Python ``regex`` syntax; matched case-insensitively, with a timeout per match."""
    score: float = Field(default=0.6, ge=0.0, le=1.0)
    """Confidence given to a match; it must reach ``threshold`` to be redacted."""

    @field_validator("entity")
    @classmethod
    def _entity_name(cls, value: str) -> str:
        if not ENTITY_NAME.match(value):
            raise ValueError("must be an upper-case identifier such as CUSTOMER_ID")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class PiiConfig(BaseModel):
    """``pii:`` in warden.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Redact what models see; needs a key in ``key_env``."""
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES))
    """Presidio entity types to redact; custom pattern entities are added automatically."""
    ner: bool = True
    """Run spaCy's named-entity model (names, places, organisations). Off, detection is patterns
    and checksums only: several times faster, but PERSON, LOCATION, ORGANIZATION and NRP cannot
    be found, so they must not be in ``entities``."""
    threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    """Minimum detection score (Presidio's 0–1 confidence) for a span to be redacted. 0.4 keeps
    phone numbers with no context word nearby (Presidio scores those 0.4)."""
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "IL", "IN", "CA", "BR"], min_length=1, max_length=50
    )
    """Regions whose national phone formats are recognised (``phonenumbers`` region codes;
    Presidio's default list). Each costs a pass over the text (about 1 ms per KB here):
    narrowing it to where your users are is faster, and international numbers (+…) are found
    whatever it says. On the benchmark set, ``[US, GB]`` missed 17 of the numbers this list finds."""
    allow_list: list[str] = Field(default_factory=list)
    """Values never redacted (compared case-insensitively to the whole detected span), e.g. the
    company's own name or support address."""
    patterns: list[PiiPattern] = Field(default_factory=list)
    key_env: str = Field(default="WARDEN_PII_KEY", min_length=1)
    """Environment variable holding the vault key(s): base64 of 32 bytes; several keys separated
    by commas rotate them (the first encrypts, all decrypt)."""
    max_chars: int = Field(default=1_000_000, ge=1)
    """Longer texts are refused (fail closed) rather than sent unredacted or analysed for minutes."""
    chunk_chars: int = Field(default=10_000, ge=1_000)
    """Texts are analysed in windows of about this size, so cost stays linear in the length."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds one detection may take before the call fails (closed)."""
    workers: int = Field(default=1, ge=1, le=32)
    """Threads running detection; spaCy holds the GIL most of the time, so more rarely helps."""

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"[A-Z]{2}", value):
                raise ValueError(f"{value!r} is not an upper-case ISO 3166 country code such as US")
        return list(dict.fromkeys(values))

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not ENTITY_NAME.match(value):
                raise ValueError(f"{value!r} is not an upper-case entity type such as PERSON")
        return list(dict.fromkeys(values))

    @model_validator(mode="after")
    def _ner_entities_need_ner(self) -> PiiConfig:
        needing = [e for e in self.entities if e in NER_ENTITIES]
        if not self.ner and needing:
            raise ValueError(
                f"{', '.join(needing)} can only be found by the named-entity model: set ner: true, "
                "or remove them from entities"
            )
        return self

    @model_validator(mode="after")
    def _unique_pattern_names(self) -> PiiConfig:
        names = [p.name for p in self.patterns]
        if len(names) != len(set(names)):
            raise ValueError("pattern names must be unique")
        return self

    @property
    def all_entities(self) -> list[str]:
        """``entities`` plus those of the custom patterns, in order, without repeats."""
        return list(dict.fromkeys([*self.entities, *(p.entity for p in self.patterns)]))
