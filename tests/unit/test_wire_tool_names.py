"""Tool names on the wire: providers accept only ^[a-zA-Z0-9_-]{1,64}$, Warden's names may hold
dots (MCP tools are `server.tool`); the mapping must be one to one and keep valid names."""

from __future__ import annotations

from warden.models.base import WIRE_TOOL_NAME, wire_tool_names


def test_valid_names_keep_their_name() -> None:
    assert wire_tool_names(["calculator", "read_file", "a-b"]) == {
        "calculator": "calculator",
        "read_file": "read_file",
        "a-b": "a-b",
    }


def test_mcp_names_become_double_underscores() -> None:
    assert wire_tool_names(["time.get_current_time"]) == {"time.get_current_time": "time__get_current_time"}


def test_the_mapping_is_one_to_one_even_when_names_clash() -> None:
    names = ["a.b", "a__b", "a/b", "x" * 80, "x" * 81, "émoji.tool"]
    wire = wire_tool_names(names)
    assert len(set(wire.values())) == len(names)
    assert wire["a__b"] == "a__b"  # the valid name wins; the dotted one gets a suffix
    assert all(WIRE_TOOL_NAME.match(w) for w in wire.values())
