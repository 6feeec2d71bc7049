"""Policy files: YAML with ``rules:``, validated with the file and line of every problem
(``policies/payments.yaml:12: rules[2].when.amount: unknown operator 'greater'``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from warden.governance.policy._yamllines import YamlProblem, line_of, load_with_lines
from warden.governance.policy.conditions import ConditionError
from warden.governance.policy.config import PolicyFile, Rule
from warden.governance.policy.errors import PolicyError


def format_path(path: Iterable[str | int]) -> str:
    """``("rules", 2, "when", "amount")`` as ``rules[2].when.amount``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _problems(source: str, exc: ValidationError, lines: dict[Any, int]) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ConditionError):
            loc = (*loc, *cause.path)
            message = cause.message
        elif err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        problems.append(f"{source}:{line_of(lines, loc)}: {format_path(loc)}: {message}")
    return problems


def parse_policy_text(text: str, source: str) -> list[Rule]:
    """The rules of one policy file's text; `PolicyError` lists every problem with its line."""
    try:
        data, lines = load_with_lines(text)
    except YamlProblem as exc:
        raise PolicyError(f"{source}:{exc.line}: {exc.message}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: the top level must be a mapping with 'rules:'")
    try:
        parsed = PolicyFile.model_validate(data)
    except ValidationError as exc:
        problems = _problems(source, exc, lines)
        raise PolicyError("\n".join(problems), problems=problems) from None
    seen: dict[str, int] = {}
    problems = []
    for index, rule in enumerate(parsed.rules):
        if rule.name in seen:
            line = line_of(lines, ("rules", index, "name"))
            problems.append(
                f"{source}:{line}: {format_path(('rules', index, 'name'))}: "
                f"rule {rule.name!r} is already defined at rules[{seen[rule.name]}]"
            )
        seen.setdefault(rule.name, index)
    if problems:
        raise PolicyError("\n".join(problems), problems=problems)
    return parsed.rules


def read_policy_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: the policy file is not UTF-8 text") from None


def load_policy_files(paths: Sequence[Path]) -> list[Rule]:
    """The rules of ``paths``, in order. Every file is checked; `PolicyError` lists the problems of
    all of them (``file:line: path: message``), including rule names used twice."""
    rules: list[Rule] = []
    problems: list[str] = []
    defined: dict[str, str] = {}
    for path in paths:
        try:
            file_rules = parse_policy_text(read_policy_file(path), str(path))
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        for index, rule in enumerate(file_rules):
            where = f"{path} rules[{index}]"
            if rule.name in defined:
                problems.append(
                    f"{path}: rules[{index}].name: rule {rule.name!r} is already defined in {defined[rule.name]}"
                )
            defined.setdefault(rule.name, where)
        rules.extend(file_rules)
    if problems:
        raise PolicyError("\n".join(problems), problems=problems)
    return rules


def check_unique_names(config_rules: Sequence[Rule], file_rules: Sequence[Rule]) -> None:
    """Rule names identify decisions in the audit log, so one name may not mean two rules."""
    inline = {rule.name for rule in config_rules}
    clashes = sorted({rule.name for rule in file_rules if rule.name in inline})
    if clashes:
        names = ", ".join(repr(n) for n in clashes)
        raise PolicyError(f"policy.rules and the policy files both define the rule(s) {names}")
