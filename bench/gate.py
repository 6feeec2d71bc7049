"""Gate overhead per tool call, without and with the PII vault.

What a tool call costs in the governance gate, in process (no database, no network):

- ``no_pii``: the policy decision for a ``payments.transfer`` call against the rules of
  ``examples/policies/payments.yaml`` (tenant, tool and argument conditions; the call matches the
  fourth rule), plus the untrusted-content marking of a 1 KB result.
- ``with_pii``: the same, plus what the vault adds: the call's arguments restored from placeholders
  (JSON-aware), and the 1 KB tool result redacted (Presidio + spaCy detection, checksums,
  substitution into the session's vault) before the model sees it.
- ``with_pii_patterns_only``: the same with ``pii.ner: false`` (patterns and checksums, no
  language model; names and places are not found, so PERSON/LOCATION are off).

Baselines in the same run: the gate with no policy (the agent's tool list only) for ``no_pii``;
Presidio's analyzer alone (full spaCy pipeline, no substitution) on the same 1 KB texts for
``with_pii``. 1 KB texts are dataset texts joined (``../shared/data/presidio_synth_dataset_v2.json``).

    python -m bench.gate [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import Target, machine_info, parser, run, summary, write_result
from bench.pii import load_dataset, texts_of_size
from warden.config import Limits
from warden.governance.gate import CallContext, Gate
from warden.governance.pii import PiiConfig, PiiDetector, PiiRedactor, PiiVault, restore_json
from warden.governance.pii.detector import LANGUAGE, build_analyzer
from warden.governance.policy.config import PolicyConfig
from warden.governance.policy.files import load_policy_files
from warden.governance.tool_policy import build_policy, tool_policy
from warden.governance.untrusted import mark_tool_output
from warden.models.base import Usage
from warden.tools.base import ToolResult, tool

NAME = "gate"
POLICY_FILE = Path(__file__).resolve().parents[1] / "examples" / "policies" / "payments.yaml"


@tool(name="payments.transfer", side_effects=True, idempotent=False)
async def transfer(amount: int, recipient: str, currency: str = "EUR", memo: str = "") -> ToolResult:
    """Move money (never called here: only decided)."""
    return ToolResult("ok")


def _timed(fn: Callable[[str], object], texts: list[str], repeat: int) -> dict[str, Any]:
    for text in texts[:3]:
        fn(text)
    samples = []
    for i in range(repeat):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        fn(text)
        samples.append((time.perf_counter() - t0) * 1000)
    return summary(samples, digits=4)


async def main(args: argparse.Namespace) -> bool:
    began = time.time()
    machine = await machine_info()
    rules = load_policy_files([POLICY_FILE])
    gate = Gate(tool_policy(build_policy(PolicyConfig(rules=rules))))
    bare = Gate()
    ctx = CallContext(
        task_id="task_bench",
        tenant_id="acme",
        agent="payments",
        step=3,
        usage=Usage(1000, 200),
        limits=Limits(),
    )
    placeholders = {"amount": 250, "recipient": "acct-1001", "currency": "EUR", "memo": "rent for <PERSON_1>"}
    assert gate.decide_tool(ctx, transfer, placeholders).rule == "small-payments"

    samples = load_dataset()
    texts = texts_of_size(samples, 1024, 50 if args.quick else 200)
    n_fast = 2_000 if args.quick else 20_000
    n_pii = 50 if args.quick else 400

    def no_pii(text: str) -> object:
        gate.decide_tool(ctx, transfer, placeholders)
        return mark_tool_output("payments.transfer", text)

    def baseline_no_pii(text: str) -> object:
        bare.decide_tool(ctx, transfer, placeholders)
        return text

    config = PiiConfig(enabled=True)
    detector = PiiDetector(config)
    redactor = PiiRedactor(detector)
    vault = PiiVault("bench")
    vault.placeholder_for("Maria Garcia", "PERSON")
    t0 = time.perf_counter()
    detector.detect_sync("warm up John Smith")
    load_s = time.perf_counter() - t0

    def with_pii(text: str) -> object:
        real = restore_json(placeholders, vault)
        gate.decide_tool(ctx, transfer, real)
        return mark_tool_output("payments.transfer", redactor.redact_sync(text, vault))

    fast_config = PiiConfig(
        enabled=True,
        ner=False,
        entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"],
    )
    fast_redactor = PiiRedactor(PiiDetector(fast_config))
    fast_redactor.redact_sync("warm up", vault)

    def with_pii_patterns_only(text: str) -> object:
        real = restore_json(placeholders, vault)
        gate.decide_tool(ctx, transfer, real)
        return mark_tool_output("payments.transfer", fast_redactor.redact_sync(text, vault))

    stock = build_analyzer(config, spacy_exclude=())

    def baseline_pii(text: str) -> object:
        return stock.analyze(text=text, language=LANGUAGE, entities=config.all_entities, score_threshold=0.4)

    print(f"gate: {n_fast} calls without PII, {n_pii} with PII on {len(texts)} 1 KB texts", flush=True)
    results: dict[str, Any] = {
        "no_pii": _timed(no_pii, texts, n_fast),
        "with_pii_1kb": _timed(with_pii, texts, n_pii),
        "with_pii_patterns_only_1kb": _timed(with_pii_patterns_only, texts, n_pii),
        "pii_model_load_s": round(load_s, 2),
        "restored_arguments_example": json.dumps(restore_json(placeholders, vault)),
    }
    baseline: dict[str, Any] = {
        "gate_without_policy": _timed(baseline_no_pii, texts, n_fast),
        "presidio_analyze_only_1kb": _timed(baseline_pii, texts, n_pii),
    }
    print(
        f"  no PII p50 {results['no_pii']['p50']} ms (no policy {baseline['gate_without_policy']['p50']} ms)\n"
        f"  with PII, 1 KB p50 {results['with_pii_1kb']['p50']} ms "
        f"(Presidio analyze alone {baseline['presidio_analyze_only_1kb']['p50']} ms)\n"
        f"  with PII, patterns only, 1 KB p50 {results['with_pii_patterns_only_1kb']['p50']} ms"
    )
    return write_result(
        NAME,
        machine=machine,
        method=__doc__,
        results=results,
        baseline=baseline,
        targets=[
            Target("gate per tool call, no PII, p50", results["no_pii"]["p50"], 1.0, "ms"),
            Target("gate per tool call, PII on 1 KB, p50", results["with_pii_1kb"]["p50"], 15.0, "ms"),
            Target(
                "gate per tool call, PII patterns only, 1 KB, p50",
                results["with_pii_patterns_only_1kb"]["p50"],
                15.0,
                "ms",
            ),
        ],
        quick=args.quick,
        began=began,
    )


if __name__ == "__main__":
    run(main, parser(__doc__ or NAME).parse_args())
