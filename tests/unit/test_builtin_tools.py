"""The built-in tools: arithmetic that cannot run code, the clock, notes kept per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from warden.tools.base import ToolContext
from warden.tools.builtin import calculator, current_time, notes_read, notes_write, wait


def ctx(tmp_path: Path, session: str = "ses_1") -> ToolContext:
    return ToolContext(
        task_id="task_1", tenant_id="tnt_1", session_id=session, call_id="c1", home=str(tmp_path)
    )


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1234 * 5678", "7006652"),
        ("(2 + 3) ** 2", "25"),
        ("sqrt(16)", "4.0"),
        ("-7 // 2", "-4"),
        ("round(pi, 2)", "3.14"),
    ],
)
async def test_calculator_evaluates_arithmetic(tmp_path: Path, expression: str, value: str) -> None:
    result = await calculator.call({"expression": expression}, ctx(tmp_path))
    assert not result.is_error
    assert result.content == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "().__class__.__bases__",
        "open('/etc/passwd')",
        "[x for x in range(10)]",
        "lambda: 1",
        "9 ** 9 ** 9",
        "1 / 0",
        "x" * 600,
    ],
)
async def test_calculator_refuses_anything_but_arithmetic(tmp_path: Path, expression: str) -> None:
    result = await calculator.call({"expression": expression}, ctx(tmp_path))
    assert result.is_error


async def test_current_time_knows_time_zones(tmp_path: Path) -> None:
    assert (await current_time.call({"timezone": "Asia/Tokyo"}, ctx(tmp_path))).content.endswith("+09:00")
    assert (await current_time.call({"timezone": "Mars/Olympus"}, ctx(tmp_path))).is_error


async def test_notes_are_kept_per_session_under_the_warden_home(tmp_path: Path) -> None:
    await notes_write.call({"title": "Shopping list", "body": "milk"}, ctx(tmp_path))
    assert "milk" in (await notes_read.call({"title": "Shopping list"}, ctx(tmp_path))).content
    other = await notes_read.call({"title": "Shopping list"}, ctx(tmp_path, session="ses_2"))
    assert other.is_error


async def test_a_note_title_cannot_escape_the_notes_folder(tmp_path: Path) -> None:
    await notes_write.call({"title": "../../../../etc/evil", "body": "x"}, ctx(tmp_path))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].is_relative_to(tmp_path / "notes" / "tnt_1" / "ses_1")


async def test_wait_streams_progress(tmp_path: Path) -> None:
    chunks: list[str] = []

    async def emit(text: str) -> None:
        chunks.append(text)

    c = ToolContext(
        task_id="t", tenant_id="n", session_id=None, call_id="c", emit_output=emit, home=str(tmp_path)
    )
    result = await wait.call({"seconds": 0.2}, c)
    assert not result.is_error
    assert chunks
    assert (await wait.call({"seconds": 1000}, c)).is_error


async def test_wrong_argument_types_are_refused(tmp_path: Path) -> None:
    result = await calculator.call({"expression": 12}, ctx(tmp_path))
    assert result.is_error
