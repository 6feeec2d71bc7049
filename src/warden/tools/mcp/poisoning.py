"""Local rules that flag tool-poisoning patterns in an MCP tool's name, description and schemas:
hidden instructions, secret paths, invisible characters and steering towards other tools."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_EXCERPT = 80


class Rule(StrEnum):
    HIDDEN_BLOCK = "hidden-block"
    """``<IMPORTANT>``, ``<SYSTEM>``… blocks that address the model rather than describe the tool."""
    HIDDEN_INSTRUCTION = "hidden-instruction"
    """Phrases that tell the model to keep something from the user or override its instructions."""
    SECRET_PATH = "secret-path"
    """Paths to credentials: ``~/.ssh``, ``id_rsa``, ``.env``, cloud credential files…"""
    TAG_CHARACTERS = "tag-characters"
    """Unicode tag characters (U+E0000–U+E007F): text the model reads and a human does not see."""
    INVISIBLE_CHARACTERS = "invisible-characters"
    """Zero-width and bidirectional-control characters."""
    TOOL_REFERENCE = "tool-reference"
    """Steering towards other tools ("before using this tool call …", another tool's name)."""
    BAD_NAME = "bad-name"
    """A name outside ``[A-Za-z0-9_.-]{1,128}``."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One finding: which rule, where in the definition, and the text that tripped it."""

    rule: Rule
    where: str
    """``name``, ``description``, ``inputSchema.properties.path.description``…"""
    excerpt: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule.value, "where": self.where, "excerpt": self.excerpt}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Flag:
        return cls(Rule(data["rule"]), str(data.get("where", "")), str(data.get("excerpt", "")))


_HIDDEN_BLOCK = re.compile(
    r"<\s*/?\s*(important|system|instructions?|secret|hidden|admin|critical|assistant|context|"
    r"sys|prompt|rules?|note)\b[^>]{0,40}>|\[/?(INST|SYSTEM)\]|<\|im_start\|>",
    re.IGNORECASE,
)
_HIDDEN_INSTRUCTION = re.compile(
    r"ignore\s+(all\s+|any\s+)?(previous|prior|above|earlier|other)\s+(instructions|rules|prompts?)"
    r"|(do\s+not|don'?t|never)\s+(tell|mention|inform|reveal|show|disclose|notify)\s+(this\s+)?(to\s+)?(the\s+)?user"
    r"|without\s+(telling|informing|notifying|asking)\s+(the\s+)?user"
    r"|(the\s+)?user\s+(must|should)\s+not\s+(know|see|be\s+told)"
    r"|(system|developer)\s+prompt"
    r"|(read|send|upload|include|pass|exfiltrate)\s+[^.]{0,40}(contents?\s+of|credentials|private\s+key|secrets?|api\s+keys?|passwords?)"
    r"|otherwise\s+the\s+tool\s+will\s+not\s+work"
    r"|this\s+is\s+(very\s+|extremely\s+)?important",
    re.IGNORECASE,
)
_SECRET_PATH = re.compile(
    r"~/\.ssh|\.ssh/|\bid_(rsa|dsa|ecdsa|ed25519)\b|(^|[\s\"'`/(])\.env\b|\.aws/credentials|\.netrc\b"
    r"|\.pgpass\b|\.npmrc\b|\.pypirc\b|\.git-credentials\b|\.docker/config\.json|\.kube/config"
    r"|/etc/(shadow|passwd|sudoers)\b|\.gnupg\b|mcp\.json\b|claude_desktop_config|authorized_keys"
    r"|BEGIN\s+[A-Z ]*PRIVATE\s+KEY",
    re.IGNORECASE,
)
_TOOL_REFERENCE = re.compile(
    r"(before|after|instead\s+of|prior\s+to)\s+(using|calling|invoking|running)\s+(this|that|any|the|another)\b"
    r"|(before|after)\s+(this\s+tool|each\s+call|every\s+call)"
    r"|(always|first|must)\s+(call|use|invoke|run)\s+(the\s+)?[`'\"]?[A-Za-z_][\w.-]*[`'\"]?\s+tool"
    r"|when\s+(the\s+)?[`'\"]?[A-Za-z_][\w.-]*[`'\"]?\s+tool\s+is\s+(called|used|invoked)"
    r"|(other|another)\s+(tools?|servers?)\s+(must|should|will)",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_INVISIBLE = frozenset(
    [
        0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
    ]
)  # fmt: skip


def _excerpt(text: str, start: int, end: int) -> str:
    lo = max(0, start - 20)
    hi = min(len(text), max(end, start + 1) + 20)
    piece = text[lo:hi]
    # Make invisible characters visible in reports.
    shown = "".join(
        f"<U+{ord(c):04X}>" if ord(c) in _INVISIBLE or 0xE0000 <= ord(c) <= 0xE007F else c for c in piece
    )
    shown = " ".join(shown.split())
    return shown[:MAX_EXCERPT] + ("…" if len(shown) > MAX_EXCERPT else "")


def _strings(value: Any, where: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (keys included), with its path; depth-bounded."""
    if depth > 32:
        return
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            path = f"{where}.{key_text}" if where else key_text
            yield path + "(key)", key_text
            yield from _strings(item, path, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]", depth + 1)


def _scan_text(where: str, text: str) -> Iterator[Flag]:
    tags = [i for i, c in enumerate(text) if 0xE0000 <= ord(c) <= 0xE007F]
    if tags:
        hidden = "".join(chr(ord(text[i]) - 0xE0000) for i in tags if 0x20 <= ord(text[i]) - 0xE0000 < 0x7F)
        yield Flag(Rule.TAG_CHARACTERS, where, f"{len(tags)} tag characters spelling {hidden[:60]!r}")
    invisible = [i for i, c in enumerate(text) if ord(c) in _INVISIBLE]
    if invisible:
        yield Flag(Rule.INVISIBLE_CHARACTERS, where, _excerpt(text, invisible[0], invisible[0] + 1))
    # Match on a normalised copy so full-width or decomposed look-alikes are caught too; the
    # invisible characters are dropped so they cannot split a keyword.
    folded = "".join(c for c in unicodedata.normalize("NFKC", text) if ord(c) not in _INVISIBLE)
    folded = "".join(c for c in folded if not 0xE0000 <= ord(c) <= 0xE007F)
    for rule, pattern in (
        (Rule.HIDDEN_BLOCK, _HIDDEN_BLOCK),
        (Rule.HIDDEN_INSTRUCTION, _HIDDEN_INSTRUCTION),
        (Rule.SECRET_PATH, _SECRET_PATH),
        (Rule.TOOL_REFERENCE, _TOOL_REFERENCE),
    ):
        match = pattern.search(folded)
        if match:
            yield Flag(rule, where, _excerpt(folded, match.start(), match.end()))


def _mentions(text: str, names: Iterable[str]) -> str | None:
    for other in names:
        # Short or generic names ("add", "echo") would flag ordinary prose.
        if len(other) < 6 or ("_" not in other and "-" not in other and "." not in other):
            continue
        if re.search(rf"(?<![\w.-]){re.escape(other)}(?![\w-])", text):
            return other
    return None


def scan(definition: dict[str, Any], other_tools: Iterable[str] = ()) -> tuple[Flag, ...]:
    """The poisoning flags of one tool definition (wire shape: name, description, inputSchema,
    annotations). ``other_tools`` are names of the other tools Warden knows, so a description
    steering the model towards one of them is flagged."""
    flags: list[Flag] = []
    name = definition.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        flags.append(Flag(Rule.BAD_NAME, "name", _excerpt(str(name), 0, 0)))
    for where, text in _strings(
        {
            k: definition.get(k)
            for k in ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
        },
        "",
    ):
        flags.extend(_scan_text(where, text))
    others = [n for n in other_tools if n != name]
    description = definition.get("description")
    if isinstance(description, str):
        mentioned = _mentions(description, others)
        if mentioned:
            flags.append(Flag(Rule.TOOL_REFERENCE, "description", f"names another tool: {mentioned}"))
    # One finding per rule and place is enough to act on.
    unique: dict[tuple[Rule, str], Flag] = {}
    for flag in flags:
        unique.setdefault((flag.rule, flag.where), flag)
    return tuple(unique.values())
