"""``warden prune``: deletes finished work past its time-to-live (``retention:`` in
warden.yaml, or ``--older-than`` for everything), in bounded batches, showing progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from warden.cli._common import config_from, console, fail, run_async
from warden.retention.config import parse_duration

_LABELS = {
    "events": "events of finished tasks",
    "checkpoints": "checkpoints of finished tasks",
    "journal": "journal entries of finished tasks",
    "approvals": "approvals of pruned tasks",
    "tasks": "finished tasks",
    "snapshots": "sandbox snapshots",
}


def prune(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="warden.yaml to read.")] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Prune every kind finished longer ago than this (30d, 12h, 3600), overriding retention:."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
) -> None:
    """Delete finished tasks, events, checkpoints and snapshots past their TTL (never the audit log)."""
    from warden.retention.pruner import Pruner
    from warden.store import Database, upgrade

    cfg = config_from(config)
    seconds: float | None = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            fail(f"--older-than: {exc}")
    if seconds is None and not cfg.retention.enabled:
        fail("nothing to prune: set TTLs under retention: in warden.yaml, or pass --older-than 30d")

    async def main() -> dict[str, int]:
        db = Database(cfg.resolved_database_url)
        try:
            await upgrade(db)
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("[bold]{task.completed:,.0f}[/]"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                rows: dict[str, TaskID] = {}

                def on_batch(kind: str, count: int) -> None:
                    if kind not in rows:
                        verb = "would delete" if dry_run else "deleting"
                        rows[kind] = progress.add_task(f"{verb} {_LABELS.get(kind, kind)}", total=None)
                    progress.advance(rows[kind], count)

                return await Pruner.for_config(cfg, db, on_batch).run(dry_run=dry_run, older_than=seconds)
        finally:
            await db.dispose()

    counts = run_async(main())
    table = Table("kind", "would delete" if dry_run else "deleted", box=None)
    for kind, count in counts.items():
        table.add_row(_LABELS.get(kind, kind), f"{count:,}")
    console.print(table)
    console.print("[dim]The audit log is never pruned: it is a hash chain.[/]")
