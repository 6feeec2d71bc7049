"""Policy files: every problem reported as ``file:line: path: message``; the store reloads a
changed file and keeps the previous engine when the change is invalid."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from warden.governance.gate import Verdict
from warden.governance.policy import (
    PolicyConfig,
    PolicyError,
    PolicyRequest,
    PolicyStore,
    load_policy_files,
    parse_policy_text,
)

GOOD = """\
rules:
  - name: big-payments
    decision: ask
    tools: [payments.*]
    when:
      amount: {gt: 1000}
    reason: payments over 1000 need a person
"""


def problems(text: str, source: str = "policies/payments.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy_text(text, source)
    return info.value.problems


def test_unknown_operator_names_file_line_and_path() -> None:
    text = """\
rules:
  - name: a
    decision: allow
    tools: [lookup]
  - name: b
    decision: deny
  - name: c
    decision: ask
    when:
      recipient: {in: [a@x.com]}
      amount:
        greater: 1000
"""
    assert problems(text) == [
        "policies/payments.yaml:11: rules[2].when.amount: unknown operator 'greater' "
        "(operators: eq, ne, gt, gte, lt, lte, in, not_in, matches, not_matches, host_in, host_not_in, exists)"
    ]


def test_nested_condition_error_points_inside_combinators() -> None:
    text = """\
rules:
  - name: a
    decision: deny
    when:
      any:
        - amount: {gt: 5}
        - to: {matches: "("}
"""
    [problem] = problems(text)
    assert problem.startswith(
        "policies/payments.yaml:7: rules[0].when.any[1].to.matches: not a valid regular expression"
    )


def test_every_problem_is_listed_with_its_line() -> None:
    text = """\
rules:
  - name: a
    decision: maybe
  - decision: deny
  - name: c
    decision: deny
    tols: [x]
"""
    assert problems(text) == [
        "policies/payments.yaml:3: rules[0].decision: Input should be 'allow', 'deny' or 'ask'",
        "policies/payments.yaml:4: rules[1].name: Field required",
        "policies/payments.yaml:7: rules[2].tols: unknown field",
    ]


def test_yaml_syntax_error_has_its_line() -> None:
    [problem] = problems("rules:\n  - name: a\n    decision: [deny\n  - name: b\n")
    assert problem.startswith("policies/payments.yaml:4: invalid YAML")


def test_duplicate_key_is_an_error() -> None:
    [problem] = problems("rules:\n  - name: a\n    decision: allow\n    decision: deny\n")
    assert problem == "policies/payments.yaml:4: duplicate key 'decision'"


def test_duplicate_rule_name_in_a_file_is_an_error() -> None:
    [problem] = problems("rules:\n  - {name: a, decision: allow}\n  - {name: a, decision: deny}\n")
    assert problem.startswith("policies/payments.yaml:3: rules[1].name: rule 'a' is already defined")


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- name: a\n") == [
        "policies/payments.yaml:1: the top level must be a mapping with 'rules:'"
    ]


def test_empty_file_has_no_rules() -> None:
    assert parse_policy_text("", "empty.yaml") == []


def test_keys_are_names_even_when_yaml_would_read_a_boolean() -> None:
    [rule] = parse_policy_text("rules:\n  - name: a\n    decision: deny\n    when: {on: {eq: 1}}\n", "f")
    assert rule.when == {"on": {"eq": 1}}


def test_load_policy_files_reports_problems_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - name: a\n    decision: nope\n")
    (tmp_path / "b.yaml").write_text("rules: [\n")
    with pytest.raises(PolicyError) as info:
        load_policy_files([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "missing.yaml"])
    found = info.value.problems
    assert len(found) == 3
    assert found[0].startswith(f"{tmp_path / 'a.yaml'}:3: rules[0].decision")
    assert found[1].startswith(f"{tmp_path / 'b.yaml'}:")
    assert "cannot read the policy file" in found[2]


def test_files_come_after_inline_rules_in_order(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("rules: [{name: one, decision: deny, tools: [x]}]\n")
    (tmp_path / "two.yaml").write_text("rules: [{name: two, decision: allow}]\n")
    config = PolicyConfig.model_validate(
        {
            "rules": [{"name": "inline", "decision": "ask", "tools": ["y"]}],
            "files": [tmp_path / "one.yaml", tmp_path / "two.yaml"],
        }
    )
    store = PolicyStore(config)
    assert [request_rule(store, tool) for tool in ("y", "x", "z")] == ["inline", "one", "two"]


def test_a_rule_name_in_both_config_and_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("rules: [{name: dup, decision: deny}]\n")
    config = PolicyConfig.model_validate(
        {"rules": [{"name": "dup", "decision": "ask"}], "files": [tmp_path / "p.yaml"]}
    )
    with pytest.raises(PolicyError, match="'dup'"):
        PolicyStore(config)


# --- reload ------------------------------------------------------------------------------------


def payment(amount: int, tool: str = "payments.send") -> PolicyRequest:
    return PolicyRequest("acme", "clerk", "t", tool, True, False, {"amount": amount})


def request_rule(store: PolicyStore, tool: str = "payments.send") -> str:
    return store.decide(payment(5000, tool)).rule


def rewrite(path: Path, text: str) -> None:
    """Write and move the mtime on, so the change is seen even within one clock tick."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "payments.yaml"
    path.write_text(GOOD)
    return path


def test_invalid_files_at_start_raise(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - name: a\n    decision: allow\n    when: {amount: {greater: 1}}\n")
    with pytest.raises(PolicyError, match=r"bad\.yaml:4: rules\[0\]\.when\.amount: unknown operator"):
        PolicyStore(PolicyConfig(files=[path]))


def test_reload_picks_up_a_change(policy_file: Path) -> None:
    store = PolicyStore(PolicyConfig(files=[policy_file]))
    assert store.decide(payment(5000)).verdict is Verdict.ASK
    rewrite(
        policy_file, GOOD.replace("decision: ask", "decision: deny").replace("big-payments", "no-payments")
    )
    assert store.reload() is True
    assert request_rule(store) == "no-payments"


def test_reload_without_a_change_keeps_the_engine(policy_file: Path) -> None:
    store = PolicyStore(PolicyConfig(files=[policy_file]))
    engine = store.engine
    rewrite(policy_file, GOOD)  # touched, same content
    assert store.reload() is False
    assert store.engine is engine


def test_invalid_change_keeps_the_old_engine_and_logs(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = PolicyStore(PolicyConfig(files=[policy_file]))
    engine = store.engine
    rewrite(policy_file, GOOD.replace("gt: 1000", "greater: 1000"))
    with caplog.at_level(logging.ERROR, logger="warden.governance.policy.store"):
        assert store.reload() is False
        assert store.reload() is False  # the same broken content is reported once
    assert store.engine is engine
    assert request_rule(store) == "big-payments"
    assert store.last_error is not None and "payments.yaml:6: rules[0].when.amount" in store.last_error
    assert len([r for r in caplog.records if "previous policy stays" in r.getMessage()]) == 1
    rewrite(policy_file, GOOD.replace("1000", "10"))
    assert store.reload() is True
    assert store.last_error is None


def test_deleted_file_keeps_the_old_engine(policy_file: Path) -> None:
    store = PolicyStore(PolicyConfig(files=[policy_file]))
    policy_file.unlink()
    assert store.reload() is False
    assert request_rule(store) == "big-payments"
    assert store.last_error is not None and "cannot read" in store.last_error


async def test_watch_reloads_in_the_background(policy_file: Path) -> None:
    store = PolicyStore(PolicyConfig(files=[policy_file]))
    watcher = asyncio.create_task(store.watch(interval=0.01))
    try:
        rewrite(policy_file, GOOD.replace("big-payments", "renamed"))
        async with asyncio.timeout(5):
            while request_rule(store) != "renamed":
                await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def test_rate_limit_counts_survive_a_reload(policy_file: Path) -> None:
    config = PolicyConfig.model_validate(
        {"files": [str(policy_file)], "rate_limits": [{"tools": ["payments.*"], "max": 1, "window": 3600}]}
    )
    store = PolicyStore(config)
    assert request_rule(store) == "big-payments"
    rewrite(policy_file, GOOD.replace("big-payments", "renamed"))
    assert store.reload() is True
    assert request_rule(store) == "rate_limits[0]"


def test_example_policy_file_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "policies" / "payments.yaml"
    assert load_policy_files([example])
