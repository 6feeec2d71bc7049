"""The server-sent-events wire format: one frame of ``id``, ``event`` and ``data`` lines."""

from __future__ import annotations


def sse_frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame. ``data`` may span lines (each becomes a ``data:`` line)."""
    lines = []
    if id is not None:
        lines.append(f"id: {_one_line(id)}")
    if event is not None:
        lines.append(f"event: {_one_line(event)}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


def _one_line(value: str) -> str:
    # A field value never holds a line break: it would end the field and start another.
    return value.replace("\r", " ").replace("\n", " ")
