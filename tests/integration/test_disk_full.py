"""A full disk under SQLite: writes fail with a clear 503 and change nothing, reads keep working,
the server stays up, and once space is freed the same server accepts and runs tasks again.

The disk is a 4 MiB tmpfs the test mounts (root is needed, as for the sandbox tests)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MakeConfig, script, step
from tests.integration.test_api_tasks import follow_to_end
from warden.testing import WardenHarness


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test mounts a tmpfs and needs root")
        pytest.skip("NOT TESTED: mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk refuses more; returns it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        for _ in range(1000):  # bounded: 64 MiB at most, far more than the disk holds
            try:
                f.write(chunk)
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError), filler.open("ab") as f:  # the last bytes a short write left
        while True:
            f.write(b"\0")
            f.flush()
    return filler


async def test_a_full_disk_gives_a_clear_error_and_loses_nothing(
    make_config: MakeConfig, tiny_disk: Path
) -> None:
    config = make_config(
        script=script("disk-full", step("first answer"), step("second answer")),
        database_url=f"sqlite+aiosqlite:///{tiny_disk / 'warden.db'}",
    )
    async with WardenHarness(config) as h, h.client() as client:
        first = await client.post("/v1/tasks", json={"agent": "tester", "input": "before"})
        assert first.status_code == 202
        await follow_to_end(client, first.json()["id"])

        filler = _fill(tiny_disk)
        refused = 0
        for i in range(20):  # SQLite may still fit a few small writes in free pages
            response = await client.post(
                "/v1/tasks", json={"agent": "tester", "input": "x" * 50_000 + str(i)}
            )
            if response.status_code == 503:
                body = response.json()
                assert body["code"] == "storage_error" and "disk is full" in body["message"], body
                refused += 1
                break
            assert response.status_code == 202, response.text
        assert refused, "the disk never filled up"
        # Reads keep working, and what was there is intact.
        listed = await client.get("/v1/tasks")
        assert listed.status_code == 200
        assert (await client.get(f"/v1/tasks/{first.json()['id']}")).json()["output"] == "first answer"

        filler.unlink()
        again = await client.post("/v1/tasks", json={"agent": "tester", "input": "after"})
        assert again.status_code == 202, again.text
        events = await follow_to_end(client, again.json()["id"])
        assert events[-1]["type"] in ("task.completed", "task.failed")
