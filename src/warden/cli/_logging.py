"""Log set-up for long-running commands: a file under the Warden home, and warnings on stderr;
as text, or as JSON lines carrying ``task_id`` and ``trace_id`` (``--log-format json``)."""

from __future__ import annotations

import logging
from pathlib import Path

from warden.telemetry.logs import LOG_FORMATS, ContextFilter, JsonFormatter

_format = "text"


def use_format(name: str) -> None:
    """``text`` or ``json``, for every later `setup` (the CLI's ``--log-format``)."""
    if name not in LOG_FORMATS:
        raise ValueError(f"unknown log format {name!r}")
    global _format
    _format = name


def setup(home: Path, level: str, *, console: bool = True) -> Path:
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "warden.log"
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    as_json = _format == "json"
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    file_handler.addFilter(ContextFilter())
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setLevel(logging.WARNING)
        stream.setFormatter(
            JsonFormatter() if as_json else logging.Formatter("%(levelname)s %(name)s: %(message)s")
        )
        stream.addFilter(ContextFilter())
        root.addHandler(stream)
    return path
