"""Render the results table and the machine of ``docs/benchmarks.md`` from ``bench/results/*.json``.

    python -m bench.report           # print the generated block
    python -m bench.report --write   # replace the block between the markers in docs/benchmarks.md

Only the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` is generated;
the method and the analysis around it are written by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench._common import PROJECT_DIR, RESULTS_DIR

DOC = PROJECT_DIR / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} ms"


def _verdict(passed: bool | None) -> str:
    return "–" if passed is None else ("**pass**" if passed else "**FAIL**")


def rows() -> list[tuple[str, str, str, str, str]]:
    out: list[tuple[str, str, str, str, str]] = []
    step = _load("step_overhead")
    if step:
        for backend, label, target in (("sqlite", "SQLite", 2.0), ("postgres", "PostgreSQL", 5.0)):
            if backend not in step["results"]:
                continue
            ours = step["results"][backend]["per_step_ms"]
            theirs = step["baseline"][backend]["sync"]["per_step_ms"]
            saver = "AsyncSqliteSaver" if backend == "sqlite" else "AsyncPostgresSaver"
            ratio = step["results"][backend]["vs_langgraph"]["p50_ratio"]
            out.append(
                (
                    f"Step overhead p50, {label}",
                    f"≤ {target:g} ms",
                    _ms(ours["p50"]),
                    f"LangGraph + {saver}: {_ms(theirs['p50'])} (Warden ×{ratio:.1f})",
                    _verdict(ours["p50"] <= target),
                )
            )
            out.append(
                (
                    f"Step overhead p99, {label}",
                    "–",
                    _ms(ours["p99"]),
                    f"LangGraph: {_ms(theirs['p99'])}",
                    "–",
                )
            )
    submit = _load("submit_latency")
    if submit:
        for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            if backend not in submit["results"]:
                continue
            ours = submit["results"][backend]["submit_to_first_event_ms"]
            health = submit["baseline"][backend]["healthz_ms"]
            out.append(
                (
                    f"Submit → first SSE event p50, {label}",
                    "≤ 15 ms",
                    _ms(ours["p50"]),
                    f"GET /healthz: {_ms(health['p50'])}",
                    _verdict(ours["p50"] <= 15.0),
                )
            )
            out.append(
                (
                    f"Submit → first SSE event p99, {label}",
                    "–",
                    _ms(ours["p99"]),
                    f"GET /healthz: {_ms(health['p99'])}",
                    "–",
                )
            )
    tput = _load("throughput")
    if tput:
        labels = {
            "service_sqlite": ("service layer, SQLite", "sqlite"),
            "http_sqlite": ("HTTP, 32 connections, SQLite", "sqlite"),
            "service_postgres": ("service layer, PostgreSQL", "postgres"),
        }
        for key, (label, floor) in labels.items():
            if key not in tput["results"]:
                continue
            value = tput["results"][key]["tasks_per_s"]
            base = tput["baseline"][floor]["rows_per_s"]
            db = "SQLite" if floor == "sqlite" else "PostgreSQL"
            out.append(
                (
                    f"1-step tasks/s, {label}",
                    "≥ 200/s",
                    f"{value:,.1f}/s",
                    f"raw {db} insert+update loop: {base:,.0f} rows/s",
                    _verdict(value >= 200.0),
                )
            )
    fan = _load("sse_fanout")
    if fan:
        n = fan["results"]["fanout"]["subscribers"]
        single = fan["baseline"]["single_subscriber"]["delivery_ms"]
        many = fan["results"]["fanout"]["delivery_ms"]
        out.append(
            (
                f"SSE delivery p99, {n:,} subscribers (httptools clients)",
                "≤ 100 ms",
                _ms(many["p99"]),
                f"1 subscriber: {_ms(single['p99'])}",
                _verdict(many["p99"] <= 100.0),
            )
        )
        out.append(
            (
                f"SSE delivery p50, {n:,} subscribers",
                "–",
                _ms(many["p50"]),
                f"1 subscriber: {_ms(single['p50'])}",
                "–",
            )
        )
        httpx_run = fan["results"].get("fanout_httpx_client")
        if httpx_run:
            out.append(
                (
                    f"SSE delivery p99, {n:,} httpx subscribers in one process (context)",
                    "–",
                    _ms(httpx_run["delivery_ms"]["p99"]),
                    f"their process's CPU {httpx_run['cpu_s']['client_process']} s for a "
                    f"{httpx_run['stream_s']} s stream",
                    "–",
                )
            )
        if "fanout_uncoalesced" in fan["results"]:
            unc = fan["results"]["fanout_uncoalesced"]["delivery_ms"]
            unc_single = fan["baseline"]["single_subscriber_uncoalesced"]["delivery_ms"]
            out.append(
                (
                    f"SSE delivery p99, {n:,} subscribers, coalescing off",
                    "≤ 100 ms",
                    _ms(unc["p99"]),
                    f"1 subscriber: {_ms(unc_single['p99'])}",
                    _verdict(unc["p99"] <= 100.0),
                )
            )
    ckpt = _load("checkpoint_bytes")
    if ckpt:
        for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            r = ckpt["results"].get(backend)
            if r is None:
                continue
            out.append(
                (
                    f"Checkpoint bytes per step, {r['steps']}-step task, {label} (mean; last step)",
                    "≤ 4,096 B",
                    f"{r['mean_checkpoint_bytes_per_step']:,.0f} B; {r['last_checkpoint_bytes']:,.0f} B",
                    f"step increment p50: {r['increment_bytes_per_step']['p50']:,.0f} B "
                    f"(total ×{r['total_vs_increments']})",
                    _verdict(r["mean_checkpoint_bytes_per_step"] <= 4096),
                )
            )
    return out


def machine_block() -> str:
    for name in ("step_overhead", "submit_latency", "throughput", "sse_fanout"):
        doc = _load(name)
        if doc:
            m = doc["machine"]
            pkgs = m.get("packages", {})
            return (
                f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB; {m['os']}; "
                f"load average at start {m.get('load_avg_at_start')}; "
                f"CPU calibration (2M-iteration Python loop) {m.get('cpu_calibration_s')} s; "
                f"thread round trip p50 {m.get('thread_hop_p50_us')} µs\n"
                f"- Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql'] or 'not reachable'} "
                f"(loopback, same machine)\n"
                "- " + ", ".join(f"{k} {v}" for k, v in pkgs.items() if v) + "\n"
            )
    return "(no results yet)\n"


def render() -> str:
    lines = ["| Figure | Target | Warden | Baseline (same run) | Verdict |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows()]
    stamps = []
    for name in ("step_overhead", "submit_latency", "throughput", "sse_fanout"):
        doc = _load(name)
        if doc:
            stamps.append(f"`{name}` {doc['when']} ({doc['elapsed_s']:g} s)")
    return (
        "\n".join(lines)
        + "\n\nRuns: "
        + "; ".join(stamps)
        + ". Raw figures: `bench/results/<name>.json`.\n\n### Machine\n\n"
        + machine_block()
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help=f"rewrite the generated block of {DOC}")
    args = p.parse_args()
    block = render()
    if not args.write:
        sys.stdout.write(block)
        return
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        sys.exit(f"{DOC} lacks the {START} … {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{block}{END}{tail}", encoding="utf-8")
    print(f"updated {DOC.relative_to(PROJECT_DIR)}")


if __name__ == "__main__":
    main()
