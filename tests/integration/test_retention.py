"""Retention: the pruner deletes only expired data of finished tasks (and old snapshots), in
batches, leaves queued work and the audit log alone, and never leaves an orphan row."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from sqlalchemy import func, insert, select

from tests.conftest import MakeConfig, script, step
from tests.integration.test_api_tasks import finished, submit
from warden.config import WardenConfig
from warden.retention.config import RetentionConfig
from warden.retention.pruner import Pruner
from warden.store.database import Database
from warden.store.migrate import upgrade
from warden.store.schema import audit_log, checkpoints, events, journal, snapshots, tasks, tenants
from warden.testing.harness import WardenHarness

CHILDREN = (events, checkpoints, journal)


def _config(make_config: MakeConfig, database_url: str | None = None) -> WardenConfig:
    name = f"prune-{uuid.uuid4().hex[:8]}"
    steps = (step("", ("calculator", {"expression": "1+1"})), step("two"))
    return make_config(script=script(name, *steps), database_url=database_url)


async def _rows(db: Database, table: object, task_id: str | None = None) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    if task_id is not None:
        query = query.where(table.c.task_id == task_id)  # type: ignore[attr-defined]
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _orphans(db: Database) -> int:
    total = 0
    async with db.read() as conn:
        for table in CHILDREN:
            query = select(func.count()).where(table.c.task_id.not_in(select(tasks.c.id)))
            total += int((await conn.execute(query)).scalar_one())
    return total


async def test_prune_deletes_expired_finished_tasks_and_keeps_the_rest(
    make_config: MakeConfig, database_url: str
) -> None:
    config = _config(make_config, database_url)
    async with WardenHarness(config) as harness, harness.client() as client:
        done = [(await submit(client, input=f"task {i}"))["id"] for i in range(3)]
        for task_id in done:
            assert (await finished(client, task_id))["status"] == "completed"
    async with WardenHarness(config, workers=0) as harness, harness.client() as client:
        queued = (await submit(client, input="nobody runs me"))["id"]
        runtime = harness.runtime
        assert runtime is not None
        db = runtime.db
        audit_before = await _rows(db, audit_log)
        assert await _rows(db, checkpoints, done[0]) > 0 and await _rows(db, journal, done[0]) > 0

        # Nothing has been finished for an hour yet.
        assert sum((await Pruner.for_config(config, db).run(older_than=3600)).values()) == 0
        # A dry run counts and changes nothing; the real run (in batches of 2) deletes as much.
        small_batches = config.model_copy(update={"retention": RetentionConfig(batch_size=2)})
        counted = await Pruner.for_config(small_batches, db).run(dry_run=True, older_than=1e-6)
        assert counted["tasks"] == 3
        assert await _rows(db, tasks) == 4
        deleted = await Pruner.for_config(small_batches, db).run(older_than=1e-6)
        assert deleted == counted

        for task_id in done:
            assert (await client.get(f"/v1/tasks/{task_id}")).status_code == 404
            for table in CHILDREN:
                assert await _rows(db, table, task_id) == 0
        assert (await client.get(f"/v1/tasks/{queued}")).json()["status"] == "queued"
        assert await _rows(db, events, queued) == 1
        assert await _orphans(db) == 0
        assert await _rows(db, audit_log) == audit_before


async def test_an_events_ttl_keeps_the_task_and_its_output(make_config: MakeConfig) -> None:
    config = _config(make_config)
    async with WardenHarness(config) as harness, harness.client() as client:
        task_id = (await submit(client, input="hello"))["id"]
        await finished(client, task_id)
        runtime = harness.runtime
        assert runtime is not None
        events_only = config.model_copy(update={"retention": RetentionConfig(events=1e-6)})
        deleted = await Pruner.for_config(events_only, runtime.db).run()
        assert deleted["events"] > 0 and "tasks" not in deleted
        task = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert task["status"] == "completed" and task["output"] == "two"
        assert await _rows(runtime.db, events, task_id) == 0
        assert await _rows(runtime.db, checkpoints, task_id) > 0


async def test_old_snapshots_lose_their_row_and_their_folder(make_config: MakeConfig, tmp_path: Path) -> None:
    config = _config(make_config)
    db = Database(config.resolved_database_url)
    try:
        await upgrade(db)
        root = config.home / "sandbox" / "snapshots"
        async with db.transaction() as conn:
            await conn.execute(insert(tenants).values(id="ten_1", name="t", created_at=0.0))
            for snap_id, age in (("snap_old", 40 * 86400), ("snap_new", 60)):
                folder = root / snap_id
                (folder / "image").mkdir(parents=True)
                await conn.execute(
                    insert(snapshots).values(
                        id=snap_id,
                        sandbox_id="sbx_1",
                        tenant_id="ten_1",
                        template="python",
                        image_path=str(folder / "image"),
                        workspace_copy=str(folder / "workspace"),
                        size_bytes=1,
                        created_at=time.time() - age,
                    )
                )
        keep = config.model_copy(update={"retention": RetentionConfig(snapshots="30d")})
        assert (await Pruner.for_config(keep, db).run())["snapshots"] == 1
        async with db.read() as conn:
            assert [r.id for r in await conn.execute(select(snapshots.c.id))] == ["snap_new"]
        assert not (root / "snap_old").exists()
        assert (root / "snap_new").is_dir()
    finally:
        await db.dispose()
