"""Log records that carry the task they were written for and the trace they belong to: a
context variable the worker sets while it runs a task, a filter that copies it (and the
current OpenTelemetry trace and span ids) onto every record, and a JSON-lines formatter."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_task_id: ContextVar[str | None] = ContextVar("warden_task_id", default=None)

LOG_FORMATS = ("text", "json")


def bind_task(task_id: str | None) -> None:
    """Tag this asyncio task's log records (and those of tasks it starts) with ``task_id``.
    The worker calls it at the top of the asyncio task that runs one Warden task, so the
    binding ends with it."""
    _task_id.set(task_id)


def current_task_id() -> str | None:
    return _task_id.get()


class ContextFilter(logging.Filter):
    """Adds ``task_id``, ``trace_id`` and ``span_id`` (None when unknown) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = _task_id.get()
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = f"{span_context.trace_id:032x}"
            record.span_id = f"{span_context.span_id:016x}"
        else:
            record.trace_id = record.span_id = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``task_id``, ``trace_id``, ``span_id`` when known, and ``exception`` text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("task_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)
