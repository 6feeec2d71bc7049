"""The ``when:`` language of policy rules: typed tests on a tool call's arguments, compiled once
into a tree that answers true, false, or `Unknown` (a value the rule needs cannot be judged).

A condition is a mapping. Each key is either an argument path (``amount``, ``payment.amount``,
``items.0.sku``) mapped to operators, or a combinator: ``all: [..]``, ``any: [..]``, ``not: {..}``.
Several keys, or several operators on one path, must all hold. Logic is three-valued (Kleene):
``all`` is false if any part is false, ``any`` is true if any part is true, and otherwise an
`Unknown` part makes the whole `Unknown`; the engine turns that into ``deny`` (fail closed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from warden.governance.policy._urlhost import HostAllowList, UrlError, url_host
from warden.netpolicy import EgressRuleError

COMBINATORS = frozenset({"all", "any", "not"})
OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "matches",
    "not_matches",
    "host_in",
    "host_not_in",
    "exists",
)
MAX_PATH_DEPTH = 32
MAX_MATCH_CHARS = 100_000
"""Longer strings are not run through a regular expression (`Unknown`, so the rule denies)."""

PathPart: TypeAlias = str | int


class ConditionError(ValueError):
    """A ``when:`` that is not valid; ``path`` locates the problem below ``when``."""

    def __init__(self, path: Sequence[PathPart], message: str):
        self.path = tuple(path)
        self.message = message
        where = ".".join(str(p) for p in self.path)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A condition that cannot be judged: the argument is missing, of the wrong type, not finite,
    or a URL whose host cannot be read."""

    field: str
    """The argument path, as written in the rule."""
    why: str

    def __str__(self) -> str:
        return f"argument '{self.field}' {self.why}"


Outcome: TypeAlias = bool | Unknown


class Condition:
    """A compiled condition."""

    def evaluate(self, arguments: Mapping[str, Any]) -> Outcome:
        raise NotImplementedError


@dataclass(frozen=True)
class _All(Condition):
    parts: tuple[Condition, ...]

    def evaluate(self, arguments: Mapping[str, Any]) -> Outcome:
        unknown: Unknown | None = None
        for part in self.parts:
            outcome = part.evaluate(arguments)
            if outcome is False:
                return False
            if isinstance(outcome, Unknown) and unknown is None:
                unknown = outcome
        return unknown if unknown is not None else True


@dataclass(frozen=True)
class _Any(Condition):
    parts: tuple[Condition, ...]

    def evaluate(self, arguments: Mapping[str, Any]) -> Outcome:
        unknown: Unknown | None = None
        for part in self.parts:
            outcome = part.evaluate(arguments)
            if outcome is True:
                return True
            if isinstance(outcome, Unknown) and unknown is None:
                unknown = outcome
        return unknown if unknown is not None else False


@dataclass(frozen=True)
class _Not(Condition):
    part: Condition

    def evaluate(self, arguments: Mapping[str, Any]) -> Outcome:
        outcome = self.part.evaluate(arguments)
        return outcome if isinstance(outcome, Unknown) else not outcome


class _Mismatch(Exception):
    """Raised by a test on a value it cannot judge; becomes `Unknown`."""


_MISSING = object()
Test: TypeAlias = Callable[[Any], bool]


@dataclass(frozen=True)
class _Field(Condition):
    path: str
    parts: tuple[str, ...]
    tests: tuple[Test, ...]
    exists: bool | None

    def _resolve(self, arguments: Mapping[str, Any]) -> Any:
        current: Any = arguments
        for depth, part in enumerate(self.parts):
            if isinstance(current, Mapping):
                current = current.get(part, _MISSING)
            elif isinstance(current, list) and part.isdigit():
                index = int(part)
                current = current[index] if index < len(current) else _MISSING
            else:
                parent = ".".join(self.parts[:depth]) or "(arguments)"
                raise _Mismatch(f"cannot be reached: '{parent}' is {_describe(current)}, not an object")
            if current is _MISSING:
                return _MISSING
        return current

    def evaluate(self, arguments: Mapping[str, Any]) -> Outcome:
        try:
            value = self._resolve(arguments)
        except _Mismatch as exc:
            return Unknown(self.path, str(exc))
        if self.exists is not None and (value is _MISSING) == self.exists:
            return False
        if value is _MISSING:
            if self.tests:
                return Unknown(self.path, "is missing")
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return Unknown(self.path, f"is not a finite number ({value})")
        try:
            return all(test(value) for test in self.tests)
        except _Mismatch as exc:
            return Unknown(self.path, str(exc))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _describe(value: Any) -> str:
    kind = _kind(value)
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _expect(value: Any, kinds: frozenset[str]) -> str:
    kind = _kind(value)
    if kind not in kinds:
        wanted = " or ".join(sorted(kinds))
        raise _Mismatch(f"is {_describe(value)}, expected {wanted}")
    return kind


_NUMBER = frozenset({"number"})
_STRING = frozenset({"string"})


def _number(value: Any) -> float | int:
    _expect(value, _NUMBER)
    return value  # type: ignore[no-any-return]


def _scalar_operand(path: tuple[PathPart, ...], operand: Any) -> Any:
    if _kind(operand) not in ("null", "boolean", "number", "string"):
        raise ConditionError(path, f"expected a string, number, boolean or null, got {_describe(operand)}")
    if isinstance(operand, float) and not math.isfinite(operand):
        raise ConditionError(path, "must be a finite number")
    return operand


def _number_operand(path: tuple[PathPart, ...], operand: Any) -> float | int:
    if _kind(operand) != "number" or not math.isfinite(operand):
        raise ConditionError(path, f"expected a finite number, got {operand!r}")
    return operand  # type: ignore[no-any-return]


def _list_operand(path: tuple[PathPart, ...], operand: Any) -> tuple[Any, ...]:
    if not isinstance(operand, list) or not operand:
        raise ConditionError(path, "expected a non-empty list")
    values = tuple(_scalar_operand((*path, i), item) for i, item in enumerate(operand))
    kinds = {_kind(v) for v in values}
    if {"boolean", "string"} <= kinds:
        # YAML 1.1 reads unquoted no/yes/on/off as booleans: ['NO', no] is almost always a typo.
        raise ConditionError(
            path, "mixes booleans and strings; quote values such as 'no', 'yes', 'on', 'off'"
        )
    return values


def _string_list_operand(path: tuple[PathPart, ...], operand: Any) -> list[str]:
    if not isinstance(operand, list) or not operand or not all(isinstance(p, str) for p in operand):
        raise ConditionError(path, "expected a non-empty list of strings")
    return operand


def _eq(operand: Any) -> Test:
    kinds = frozenset({_kind(operand)})

    def test(value: Any) -> bool:
        _expect(value, kinds)
        return bool(value == operand)

    return test


def _in(operands: tuple[Any, ...]) -> Test:
    kinds = frozenset(_kind(o) for o in operands)

    def test(value: Any) -> bool:
        kind = _expect(value, kinds)
        return any(_kind(o) == kind and o == value for o in operands)

    return test


def _compare(operand: float | int, op: Callable[[Any, Any], bool]) -> Test:
    def test(value: Any) -> bool:
        return op(_number(value), operand)

    return test


def _matches(path: tuple[PathPart, ...], operand: Any) -> Test:
    if not isinstance(operand, str):
        raise ConditionError(path, "expected a regular expression (a string)")
    try:
        pattern = re.compile(operand)
    except re.error as exc:
        raise ConditionError(path, f"not a valid regular expression: {exc}") from None

    def test(value: Any) -> bool:
        _expect(value, _STRING)
        if len(value) > MAX_MATCH_CHARS:
            raise _Mismatch(f"is longer than {MAX_MATCH_CHARS} characters")
        return pattern.fullmatch(value) is not None

    return test


def _host_in(path: tuple[PathPart, ...], operand: Any) -> Test:
    try:
        allowed = HostAllowList.from_patterns(_string_list_operand(path, operand))
    except EgressRuleError as exc:
        raise ConditionError(path, str(exc)) from None

    def test(value: Any) -> bool:
        _expect(value, _STRING)
        try:
            host = url_host(value)
        except UrlError as exc:
            raise _Mismatch(f"is not a URL whose host can be judged: it {exc}") from None
        return allowed.contains(host)[0]

    return test


def _negate(test: Test) -> Test:
    return lambda value: not test(value)


def _field(path: tuple[PathPart, ...], name: str, spec: Any) -> Condition:
    parts = tuple(name.split("."))
    if not name or any(not p for p in parts):
        raise ConditionError(path, "an argument path needs non-empty names separated by '.'")
    if len(parts) > MAX_PATH_DEPTH:
        raise ConditionError(path, f"an argument path may have at most {MAX_PATH_DEPTH} parts")
    if not isinstance(spec, Mapping) or not spec:
        raise ConditionError(
            path, f"expected operators such as {{eq: ...}} or {{gt: 1000}}, got {_describe(spec)}"
        )
    tests: list[Test] = []
    exists: bool | None = None
    for op, operand in spec.items():
        where = (*path, op)
        match op:
            case "eq":
                tests.append(_eq(_scalar_operand(where, operand)))
            case "ne":
                tests.append(_negate(_eq(_scalar_operand(where, operand))))
            case "gt":
                tests.append(_compare(_number_operand(where, operand), lambda a, b: a > b))
            case "gte":
                tests.append(_compare(_number_operand(where, operand), lambda a, b: a >= b))
            case "lt":
                tests.append(_compare(_number_operand(where, operand), lambda a, b: a < b))
            case "lte":
                tests.append(_compare(_number_operand(where, operand), lambda a, b: a <= b))
            case "in":
                tests.append(_in(_list_operand(where, operand)))
            case "not_in":
                tests.append(_negate(_in(_list_operand(where, operand))))
            case "matches":
                tests.append(_matches(where, operand))
            case "not_matches":
                tests.append(_negate(_matches(where, operand)))
            case "host_in":
                tests.append(_host_in(where, operand))
            case "host_not_in":
                tests.append(_negate(_host_in(where, operand)))
            case "exists":
                if not isinstance(operand, bool):
                    raise ConditionError(where, "expected true or false")
                exists = operand
            case _:
                known = ", ".join(OPERATORS)
                raise ConditionError(path, f"unknown operator {op!r} (operators: {known})")
    if exists is False and tests:
        raise ConditionError(path, "'exists: false' cannot be combined with other operators")
    return _Field(name, parts, tuple(tests), exists)


def compile_condition(spec: Any, path: tuple[PathPart, ...] = ()) -> Condition:
    """Compile a ``when:`` mapping; raises `ConditionError` naming the path of the problem."""
    if not isinstance(spec, Mapping) or not spec:
        raise ConditionError(path, f"expected a non-empty mapping of conditions, got {_describe(spec)}")
    parts: list[Condition] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise ConditionError(path, f"{key!r} is not an argument path or all/any/not")
        where = (*path, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ConditionError(where, "expected a non-empty list of conditions")
            children = tuple(compile_condition(item, (*where, i)) for i, item in enumerate(value))
            parts.append(_All(children) if key == "all" else _Any(children))
        elif key == "not":
            parts.append(_Not(compile_condition(value, where)))
        else:
            parts.append(_field(where, key, value))
    return parts[0] if len(parts) == 1 else _All(tuple(parts))
