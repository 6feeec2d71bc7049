"""`warden …`: serve the API and workers, run and watch tasks, manage keys, run the demo."""

from __future__ import annotations

from warden.cli.main import app


def main() -> None:
    app()


__all__ = ["app", "main"]
