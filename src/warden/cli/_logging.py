"""Log set-up for long-running commands: a file under the Warden home, and warnings on stderr."""

from __future__ import annotations

import logging
from pathlib import Path


def setup(home: Path, level: str, *, console: bool = True) -> Path:
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "warden.log"
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setLevel(logging.WARNING)
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    return path
