"""The policy engine decides tool calls: globs per tool, agent and tenant; each condition
operator; nested paths and combinators; first match wins; defaults by side effects; failing
closed on arguments it cannot judge; URL hosts; rate limits; Cedar."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from warden.governance.gate import Decision, Verdict
from warden.governance.policy import (
    RULE_ARGUMENTS,
    RULE_DEFAULT,
    RULE_DEFAULT_SIDE_EFFECTS,
    PolicyConfig,
    PolicyEngine,
    PolicyError,
    PolicyRequest,
    PolicyStore,
    SlidingWindowLimiter,
    Unknown,
    compile_condition,
)


def engine(*rules: dict[str, Any], **settings: Any) -> PolicyEngine:
    return PolicyEngine.from_config(PolicyConfig.model_validate({"rules": list(rules), **settings}))


def call(
    tool: str = "pay",
    arguments: Any = None,
    *,
    agent: str = "clerk",
    tenant: str = "acme",
    task: str = "task-1",
    side_effects: bool = True,
) -> PolicyRequest:
    return PolicyRequest(
        tenant_id=tenant,
        agent=agent,
        task_id=task,
        tool=tool,
        side_effects=side_effects,
        idempotent=False,
        arguments={} if arguments is None else arguments,
    )


def when(condition: dict[str, Any], decision: str = "deny") -> PolicyEngine:
    return engine({"name": "r", "decision": decision, "when": condition}, default_side_effects="allow")


def verdict(e: PolicyEngine, arguments: Any, tool: str = "pay") -> Verdict:
    return e.decide(call(tool, arguments)).verdict


# --- scope: tools, agents, tenants -------------------------------------------------------------


def test_tool_glob_matches_mcp_server_tools() -> None:
    e = engine({"name": "no-github", "decision": "deny", "tools": ["github.*"], "reason": "not today"})
    assert e.decide(call("github.create_issue")) == Decision(Verdict.DENY, "no-github", "not today")
    assert e.decide(call("gitlab.create_issue")).rule == RULE_DEFAULT_SIDE_EFFECTS


def test_tool_glob_is_case_sensitive_and_anchored() -> None:
    e = engine({"name": "r", "decision": "deny", "tools": ["send_email"]})
    assert e.decide(call("send_email")).verdict is Verdict.DENY
    assert e.decide(call("Send_Email")).rule == RULE_DEFAULT_SIDE_EFFECTS
    assert e.decide(call("send_email_later")).rule == RULE_DEFAULT_SIDE_EFFECTS


def test_agent_glob_limits_a_rule_to_matching_agents() -> None:
    e = engine({"name": "r", "decision": "allow", "agents": ["support-*"]})
    assert e.decide(call(agent="support-bot")).verdict is Verdict.ALLOW
    assert e.decide(call(agent="finance-bot")).verdict is Verdict.ASK


def test_tenant_glob_limits_a_rule_to_matching_tenants() -> None:
    e = engine({"name": "r", "decision": "deny", "tenants": ["trial-*"]}, default_side_effects="allow")
    assert e.decide(call(tenant="trial-42")).verdict is Verdict.DENY
    assert e.decide(call(tenant="acme")).verdict is Verdict.ALLOW


def test_side_effects_matcher_selects_tools_by_their_flag() -> None:
    e = engine({"name": "writes", "decision": "deny", "side_effects": True})
    assert e.decide(call(side_effects=True)).rule == "writes"
    assert e.decide(call(side_effects=False)).rule == RULE_DEFAULT


# --- defaults and order ------------------------------------------------------------------------


def test_side_effecting_tool_defaults_to_ask() -> None:
    decision = engine().decide(call(side_effects=True))
    assert (decision.verdict, decision.rule) == (Verdict.ASK, RULE_DEFAULT_SIDE_EFFECTS)


def test_tool_without_side_effects_defaults_to_allow() -> None:
    decision = engine().decide(call(side_effects=False))
    assert (decision.verdict, decision.rule) == (Verdict.ALLOW, RULE_DEFAULT)


def test_defaults_are_configurable() -> None:
    e = engine(default_side_effects="deny", default="deny")
    assert e.decide(call(side_effects=True)).verdict is Verdict.DENY
    assert e.decide(call(side_effects=False)).verdict is Verdict.DENY


def test_first_matching_rule_wins() -> None:
    e = engine(
        {"name": "small", "decision": "allow", "when": {"amount": {"lte": 100}}},
        {"name": "all-pay", "decision": "deny", "tools": ["pay"]},
        {"name": "never", "decision": "allow"},
    )
    assert e.decide(call(arguments={"amount": 50})).rule == "small"
    assert e.decide(call(arguments={"amount": 500})).rule == "all-pay"


def test_rule_allows_a_side_effecting_tool() -> None:
    e = engine({"name": "email-ok", "decision": "allow", "tools": ["send_email"]})
    assert e.decide(call("send_email")).verdict is Verdict.ALLOW


# --- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        ({"eq": "EUR"}, "EUR", True),
        ({"eq": "EUR"}, "USD", False),
        ({"ne": "EUR"}, "USD", True),
        ({"ne": "EUR"}, "EUR", False),
        ({"eq": True}, True, True),
        ({"eq": None}, None, True),
        ({"gt": 1000}, 1000.5, True),
        ({"gt": 1000}, 1000, False),
        ({"gte": 1000}, 1000, True),
        ({"lt": 0}, -1, True),
        ({"lt": 0}, 0, False),
        ({"lte": 0.5}, 0.5, True),
        ({"in": ["a@x.com", "b@x.com"]}, "b@x.com", True),
        ({"in": ["a@x.com"]}, "c@x.com", False),
        ({"not_in": ["a@x.com"]}, "c@x.com", True),
        ({"not_in": ["a@x.com"]}, "a@x.com", False),
        ({"in": [1, 2, 3]}, 2, True),
        ({"matches": r".*@example\.com"}, "bob@example.com", True),
        ({"matches": r".*@example\.com"}, "bob@example.com.evil.net", False),  # full match
        ({"not_matches": r".*@example\.com$"}, "bob@evil.net", True),
        ({"not_matches": r".*@example\.com$"}, "bob@example.com", False),
        ({"gt": 10, "lt": 20}, 15, True),  # several operators: all must hold
        ({"gt": 10, "lt": 20}, 25, False),
    ],
)
def test_operator(condition: dict[str, Any], value: Any, expected: bool) -> None:
    e = when({"field": condition})
    assert verdict(e, {"field": value}) is (Verdict.DENY if expected else Verdict.ALLOW)


def test_exists_checks_presence_without_failing_closed() -> None:
    e = when({"cc": {"exists": True}})
    assert verdict(e, {"cc": "x@y.com"}) is Verdict.DENY
    assert verdict(e, {}) is Verdict.ALLOW
    assert verdict(when({"cc": {"exists": False}}), {}) is Verdict.DENY


def test_dotted_path_reaches_nested_arguments() -> None:
    e = when({"payment.amount": {"gt": 1000}}, decision="ask")
    assert verdict(e, {"payment": {"amount": 5000}}) is Verdict.ASK
    assert verdict(e, {"payment": {"amount": 5}}) is Verdict.ALLOW


def test_dotted_path_indexes_lists() -> None:
    e = when({"items.1.price": {"gt": 10}})
    assert verdict(e, {"items": [{"price": 1}, {"price": 50}]}) is Verdict.DENY


def test_a_literal_dotted_key_is_not_read_for_a_nested_path() -> None:
    e = when({"payment.amount": {"gt": 1000}}, decision="ask")
    # The model cannot hide the real amount behind a key that spells the path.
    decision = e.decide(call(arguments={"payment.amount": 1, "payment": {"amount": 5000}}))
    assert decision.verdict is Verdict.ASK


def test_all_combinator_needs_every_part() -> None:
    e = when({"all": [{"amount": {"gt": 100}}, {"currency": {"ne": "EUR"}}]})
    assert verdict(e, {"amount": 200, "currency": "USD"}) is Verdict.DENY
    assert verdict(e, {"amount": 200, "currency": "EUR"}) is Verdict.ALLOW


def test_any_combinator_needs_one_part() -> None:
    e = when({"any": [{"amount": {"gt": 100}}, {"currency": {"ne": "EUR"}}]})
    assert verdict(e, {"amount": 1, "currency": "USD"}) is Verdict.DENY
    assert verdict(e, {"amount": 1, "currency": "EUR"}) is Verdict.ALLOW


def test_not_combinator_negates() -> None:
    e = when({"not": {"recipient": {"matches": r".*@acme\.com"}}})
    assert verdict(e, {"recipient": "x@evil.com"}) is Verdict.DENY
    assert verdict(e, {"recipient": "x@acme.com"}) is Verdict.ALLOW


def test_keys_of_one_condition_must_all_hold() -> None:
    e = when({"amount": {"gt": 100}, "currency": {"eq": "USD"}})
    assert verdict(e, {"amount": 200, "currency": "USD"}) is Verdict.DENY
    assert verdict(e, {"amount": 200, "currency": "EUR"}) is Verdict.ALLOW


# --- failing closed ----------------------------------------------------------------------------


def test_missing_field_fails_closed_even_for_an_allow_rule() -> None:
    e = engine({"name": "small", "decision": "allow", "when": {"amount": {"lte": 100}}})
    decision = e.decide(call(arguments={"amnt": 5}))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "small")
    assert "'amount' is missing" in decision.reason


def test_string_where_a_number_is_expected_fails_closed() -> None:
    decision = when({"amount": {"gt": 1000}}, decision="ask").decide(call(arguments={"amount": "5000"}))
    assert decision.verdict is Verdict.DENY
    assert "'amount' is a string, expected number" in decision.reason


def test_boolean_is_not_a_number() -> None:
    assert verdict(when({"amount": {"lt": 10}}, decision="allow"), {"amount": True}) is Verdict.DENY


def test_list_where_a_string_is_expected_fails_closed() -> None:
    # A deny-list must not be dodged by wrapping the value in a list.
    e = when({"recipient": {"eq": "boss@acme.com"}})
    assert verdict(e, {"recipient": ["boss@acme.com"]}) is Verdict.DENY
    assert "expected string" in e.decide(call(arguments={"recipient": ["boss@acme.com"]})).reason


def test_path_through_a_non_object_fails_closed() -> None:
    decision = when({"payment.amount": {"gt": 1}}).decide(call(arguments={"payment": "lots"}))
    assert decision.verdict is Verdict.DENY
    assert "'payment' is a string" in decision.reason


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_denied(number: float) -> None:
    decision = engine(default_side_effects="allow").decide(call(arguments={"amount": number}))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, RULE_ARGUMENTS)
    assert "not finite" in decision.reason


def test_non_finite_number_in_a_condition_is_unknown() -> None:
    # Reached directly (without the engine's argument check) a condition still refuses NaN.
    outcome = compile_condition({"amount": {"lte": 100}}).evaluate({"amount": math.nan})
    assert isinstance(outcome, Unknown)
    assert outcome.field == "amount"


@pytest.mark.parametrize("arguments", [[1, 2], "amount=5", 42, None])
def test_non_object_arguments_are_denied(arguments: Any) -> None:
    request = PolicyRequest("acme", "clerk", "t", "pay", False, True, arguments)
    decision = engine(default="allow").decide(request)
    assert (decision.verdict, decision.rule) == (Verdict.DENY, RULE_ARGUMENTS)


def test_non_json_values_are_denied() -> None:
    decision = engine(default="allow").decide(call(arguments={"when": object()}, side_effects=False))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, RULE_ARGUMENTS)


def test_any_with_a_true_part_does_not_need_the_unknown_part() -> None:
    # Kleene logic: the outcome does not depend on the missing field, so no fail-closed deny.
    e = when({"any": [{"cc": {"exists": False}}, {"cc": {"matches": r".*@acme\.com"}}]}, decision="allow")
    assert verdict(e, {}) is Verdict.ALLOW
    assert verdict(e, {"cc": 5}) is Verdict.DENY


def test_all_with_a_false_part_does_not_need_the_unknown_part() -> None:
    e = when({"all": [{"currency": {"eq": "EUR"}}, {"amount": {"gt": 100}}]}, decision="ask")
    assert verdict(e, {"currency": "USD"}) is Verdict.ALLOW
    assert verdict(e, {"currency": "EUR"}) is Verdict.DENY


def test_not_of_unknown_is_still_unknown() -> None:
    e = when({"not": {"amount": {"gt": 100}}}, decision="allow")
    assert verdict(e, {"amount": "x"}) is Verdict.DENY


# --- URL hosts ---------------------------------------------------------------------------------

HOSTS = ["api.example.com", "*.example.org"]


def url_rule() -> PolicyEngine:
    return engine(
        {"name": "egress", "decision": "deny", "tools": ["fetch"], "when": {"url": {"host_not_in": HOSTS}}},
        default="allow",
    )


def fetch(url: Any) -> Decision:
    return url_rule().decide(call("fetch", {"url": url}, side_effects=False))


@pytest.mark.parametrize(
    "url",
    ["https://api.example.com/v1", "https://API.Example.com./v1", "http://a.b.example.org:8080/x"],
)
def test_url_inside_the_allow_list_passes(url: str) -> None:
    assert fetch(url).verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/",
        "https://example.org/",  # *.example.org does not cover example.org itself
        "https://api.example.com.evil.com/",
        "http://api.example.com@evil.com/",  # userinfo: the host is evil.com
        "http://api.example.com:pw@evil.com/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://127.0.0.1/",
        "http://localhost/",
    ],
)
def test_url_outside_the_allow_list_is_denied(url: str) -> None:
    decision = fetch(url)
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "egress")


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.com\\@api.example.com/",  # parsers disagree on backslashes
        "http://0x7f.0.0.1/",
        "http://2130706433/",
        "http://127.1/",
        "http://%31%32%37.0.0.1/",
        "http://[fe80::1%25eth0]/",
        "api.example.com/v1",  # no scheme
        "https:///path",
        "http://api.example.com:99999/",
        "http://api.exämple.com/",
        " https://api.example.com/",
        42,
    ],
)
def test_url_that_cannot_be_judged_fails_closed(url: Any) -> None:
    decision = fetch(url)
    assert decision.verdict is Verdict.DENY
    assert "cannot judge" in decision.reason


def test_always_blocked_addresses_are_outside_even_when_listed() -> None:
    e = engine(
        {
            "name": "internal-ok",
            "decision": "allow",
            "tools": ["fetch"],
            "when": {"url": {"host_in": ["10.0.0.0/8", "169.254.169.254", "localhost"]}},
        },
        default="deny",
    )
    for url in ("http://10.1.2.3/", "http://169.254.169.254/", "http://localhost/"):
        assert e.decide(call("fetch", {"url": url}, side_effects=False)).verdict is Verdict.DENY


def test_host_in_allows_public_networks_in_the_list() -> None:
    e = engine(
        {"name": "ok", "decision": "allow", "when": {"url": {"host_in": ["203.0.113.0/24"]}}},
        default="deny",
    )
    assert e.decide(call("fetch", {"url": "https://203.0.113.7/"}, side_effects=False)).rule == "ok"


# --- validation of rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        {"amount": {"greater": 5}},
        {"amount": 5},
        {"amount": {"gt": "5"}},
        {"amount": {"gt": math.nan}},
        {"to": {"in": []}},
        {"to": {"in": ["NO", False]}},  # YAML's unquoted `no`
        {"to": {"matches": "("}},
        {"url": {"host_in": ["not a host"]}},
        {"all": []},
        {"not": [{"a": {"eq": 1}}]},
        {"a..b": {"eq": 1}},
        {"a": {"exists": False, "eq": 1}},
    ],
)
def test_invalid_condition_is_rejected_at_load(condition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate({"rules": [{"name": "r", "decision": "deny", "when": condition}]})


def test_rule_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="two rules are named"):
        PolicyConfig.model_validate(
            {"rules": [{"name": "r", "decision": "deny"}, {"name": "r", "decision": "allow"}]}
        )


# --- rate limits -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(per: str, clock: Clock, **rule: Any) -> PolicyEngine:
    config = PolicyConfig.model_validate(
        {
            "rules": [{"name": "ok", "decision": "allow"}, *([rule] if rule else [])],
            "rate_limits": [{"name": "search-rate", "tools": ["search"], "per": per, "max": 2, "window": 60}],
        }
    )
    return PolicyEngine.from_config(config, limiter=SlidingWindowLimiter(clock=clock))


def test_rate_limit_denies_beyond_max_within_the_window() -> None:
    clock = Clock()
    e = limited("tenant", clock)
    assert [e.decide(call("search")).verdict for _ in range(2)] == [Verdict.ALLOW, Verdict.ALLOW]
    decision = e.decide(call("search"))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "search-rate")
    assert "2 times in the last 60s" in decision.reason


def test_rate_limit_window_slides() -> None:
    clock = Clock()
    e = limited("tenant", clock)
    e.decide(call("search"))
    clock.now += 30
    e.decide(call("search"))
    clock.now += 31  # the first call left the window
    assert e.decide(call("search")).verdict is Verdict.ALLOW
    assert e.decide(call("search")).verdict is Verdict.DENY


def test_rate_limit_counts_only_matching_tools() -> None:
    e = limited("tenant", Clock())
    for _ in range(5):
        assert e.decide(call("fetch")).verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    ("per", "other"),
    [
        ("tenant", {"tenant": "globex"}),
        ("agent", {"agent": "other-bot"}),
        ("task", {"task": "task-2"}),
    ],
)
def test_rate_limit_counts_per_scope(per: str, other: dict[str, str]) -> None:
    e = limited(per, Clock())
    e.decide(call("search"))
    e.decide(call("search"))
    assert e.decide(call("search")).verdict is Verdict.DENY
    assert e.decide(call("search", **other)).verdict is Verdict.ALLOW


def test_denied_calls_do_not_use_the_rate_limit() -> None:
    clock = Clock()
    config = PolicyConfig.model_validate(
        {
            "rules": [{"name": "no-secret", "decision": "deny", "when": {"q": {"eq": "secret"}}}],
            "rate_limits": [{"tools": ["search"], "max": 1, "window": 60}],
            "default": "allow",
        }
    )
    e = PolicyEngine.from_config(config, limiter=SlidingWindowLimiter(clock=clock))
    for _ in range(3):
        assert e.decide(call("search", {"q": "secret"}, side_effects=False)).rule == "no-secret"
    assert e.decide(call("search", {"q": "ok"}, side_effects=False)).verdict is Verdict.ALLOW
    assert e.decide(call("search", {"q": "ok"}, side_effects=False)).rule == "rate_limits[0]"


# --- Cedar -------------------------------------------------------------------------------------

CEDAR = """
@id("big-payments")
@decision("ask")
@reason("payments over 1000 need a person")
permit(principal, action == Warden::Action::"call", resource == Warden::Tool::"pay")
when { context.arguments.amount > 1000 };

@id("no-trials")
forbid(principal in Warden::Tenant::"trial", action, resource);

@id("lookups")
permit(principal, action, resource == Warden::Tool::"lookup");
"""


@pytest.fixture
def cedar_engine(tmp_path: Path) -> PolicyEngine:
    pytest.importorskip("cedarpy")
    (tmp_path / "p.cedar").write_text(CEDAR)
    config = PolicyConfig.model_validate(
        {
            "rules": [{"name": "yaml-first", "decision": "allow", "tools": ["pay"], "agents": ["vip"]}],
            "cedar": {"policies": str(tmp_path / "p.cedar")},
        }
    )
    return PolicyStore(config).engine


def test_cedar_permit_annotated_ask_asks(cedar_engine: PolicyEngine) -> None:
    decision = cedar_engine.decide(call("pay", {"amount": 5000}))
    assert decision == Decision(Verdict.ASK, "cedar:big-payments", "payments over 1000 need a person")


def test_cedar_forbid_denies(cedar_engine: PolicyEngine) -> None:
    decision = cedar_engine.decide(call("lookup", tenant="trial"))
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "cedar:no-trials")


def test_cedar_permit_allows(cedar_engine: PolicyEngine) -> None:
    assert cedar_engine.decide(call("lookup")).rule == "cedar:lookups"


def test_cedar_without_an_applicable_policy_leaves_the_defaults(cedar_engine: PolicyEngine) -> None:
    assert cedar_engine.decide(call("pay", {"amount": 5})).rule == RULE_DEFAULT_SIDE_EFFECTS


def test_cedar_evaluation_error_denies(cedar_engine: PolicyEngine) -> None:
    decision = cedar_engine.decide(call("pay", {}))  # the permit's condition reads a missing field
    assert (decision.verdict, decision.rule) == (Verdict.DENY, "cedar")


def test_yaml_rules_come_before_cedar(cedar_engine: PolicyEngine) -> None:
    assert cedar_engine.decide(call("pay", {"amount": 5000}, agent="vip")).rule == "yaml-first"


def test_invalid_cedar_policies_are_a_policy_error(tmp_path: Path) -> None:
    pytest.importorskip("cedarpy")
    (tmp_path / "p.cedar").write_text("permit(principal, action, resource")
    config = PolicyConfig.model_validate({"cedar": {"policies": str(tmp_path / "p.cedar")}})
    with pytest.raises(PolicyError, match="invalid Cedar policies"):
        PolicyStore(config)
