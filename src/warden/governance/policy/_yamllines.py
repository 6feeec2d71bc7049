"""YAML that remembers where each value was written: data plus a map from its path
(``("rules", 2, "when", "amount")``) to a 1-based line, so errors can point at the line."""

from __future__ import annotations

from typing import Any, TypeAlias

import yaml

Path_: TypeAlias = tuple[str | int, ...]
MAX_NODES = 100_000
"""Aliases can make a small file expand enormously; a policy file never needs this many values."""


class YamlProblem(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _Builder:
    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.nodes = 0
        self.scalars = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlProblem(node.start_mark.line + 1, f"more than {MAX_NODES} values (alias expansion?)")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlProblem(line, "keys must be plain names (no complex keys or '<<' merges)")
                # Keys are names: take the text as written, so `on:` or `no:` stay strings.
                key = key_node.value
                if key in result:
                    raise YamlProblem(line, f"duplicate key {key!r}")
                self.lines[(*path, key)] = line
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalars.construct_object(node, deep=True)


def load_with_lines(text: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document; raises `YamlProblem` with the line of a syntax error."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlProblem(line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, f"invalid YAML: {exc}") from None
    if node is None:
        return None, {}
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise YamlProblem(mark.line + 1 if mark else 1, f"invalid YAML: {exc.problem}") from None
    return data, builder.lines


def line_of(lines: dict[Path_, int], path: Path_) -> int:
    """The line of ``path``, or of its nearest ancestor that was written."""
    for end in range(len(path), -1, -1):
        if (line := lines.get(path[:end])) is not None:
            return line
    return 1
