"""The console's sandbox pages in headless Chromium, on real gVisor: a sandbox's state and
resources, its files (browse a folder, open a text file and an image, download one) and a
snapshot taken from the page."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import MakeConfig, script, step

# Importing the sandbox suite also applies its rule: without runsc, skip (but fail on CI).
from tests.integration.test_sandboxes import SANDBOX, _all_sandboxes
from warden.testing import WardenHarness

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPORT = (
    b'hello from the sandbox\n<script>window.__pwned = 3</script>\n<img src=x onerror="window.__pwned = 4">\n'
)


def _png(width: int, height: int) -> bytes:
    """A small valid PNG (a grey gradient), made here so the test needs no image library."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes((x * 255 // width) for x in range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest_asyncio.fixture(loop_scope="session")
async def harness(make_config: MakeConfig) -> AsyncIterator[WardenHarness]:
    """The sandbox suite's harness, in the browser tests' event loop."""
    config = make_config(
        script=script(f"console-sbx-{uuid.uuid4().hex[:8]}", step("ok")),
        tools=["python", "shell", "read_file", "write_file"],
        sandbox=SANDBOX,
    )
    async with WardenHarness(config) as h:
        yield h
        assert h.runtime is not None and h.runtime.sandboxes is not None
        for record in await _all_sandboxes(h):
            await h.runtime.sandboxes._destroy(record)


async def test_a_sandboxs_files_open_and_download_in_the_console(
    harness: WardenHarness, page: Page, tmp_path: Path
) -> None:
    chart = _png(64, 24)
    async with harness.client() as client:
        created = await client.post("/v1/sandboxes", json={})
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["id"]
        for path, body in (("report.txt", REPORT), ("charts/plot.png", chart)):
            put = await client.put(
                f"/v1/sandboxes/{sandbox_id}/files/content", params={"path": path}, content=body
            )
            assert put.status_code == 200, put.text

    await sign_in(page, harness.url, harness.admin_key)
    await page.get_by_role("link", name="Sandboxes").click()
    row = page.locator("table.data tbody tr").filter(has_text=sandbox_id)
    await expect(row.locator(".badge")).to_have_text("running")
    await screenshot(page, "08-sandboxes")
    await row.get_by_role("link", name=sandbox_id).click()

    # State and resources (the template's limits).
    await expect(page.locator(".page-header .badge")).to_have_text("running")
    resources = page.locator("section").filter(has=page.get_by_role("heading", name="Resources"))
    await expect(resources).to_contain_text("CPUs")
    await expect(resources).to_contain_text("1.0 GiB")
    await expect(resources).to_contain_text("Networkoff")

    # Open a text file: its bytes are shown as text, never as markup.
    await page.get_by_role("button", name="Open file report.txt").click()
    viewer = page.get_by_role("region", name="File viewer")
    await expect(viewer.locator("pre")).to_have_text(REPORT.decode())
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img[src='x'], main script").count() == 0

    # Download it: the bytes saved are the bytes in the sandbox.
    async with page.expect_download() as download_info:
        await viewer.get_by_role("button", name="Download report.txt").click()
    download = await download_info.value
    saved = tmp_path / "report.txt"
    await download.save_as(saved)
    assert download.suggested_filename == "report.txt" and saved.read_bytes() == REPORT

    # A folder, and an image in it.
    await page.get_by_role("button", name="Open folder charts").click()
    await page.get_by_role("button", name="Open file plot.png").click()
    image = viewer.get_by_role("img", name="Contents of plot.png")
    await expect(image).to_be_visible()
    assert await image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [64, 24]
    await screenshot(page, "09-sandbox-files")

    # A snapshot taken from the page appears in its list.
    await page.get_by_role("button", name="Create snapshot").click()
    snapshots = page.locator("section").filter(has=page.get_by_role("heading", name="Snapshots"))
    await expect(snapshots.locator("tbody tr")).to_have_count(1, timeout=30_000)
    await screenshot(page, "10-sandbox-snapshot")


async def test_sandbox_resources_are_the_templates_limits_and_tenant_scoped(harness: WardenHarness) -> None:
    async with harness.client() as client:
        sandbox_id = (await client.post("/v1/sandboxes", json={})).json()["id"]
        resources = await client.get(f"/v1/sandboxes/{sandbox_id}/resources")
        stranger_key = await harness.key_for("other-tenant", scopes=["sandboxes:read"])
        no_scope_key = await harness.key_for("default", scopes=["tasks:read"])
        async with harness.client(stranger_key) as stranger, harness.client(no_scope_key) as reader:
            hidden = await stranger.get(f"/v1/sandboxes/{sandbox_id}/resources")
            refused = await reader.get(f"/v1/sandboxes/{sandbox_id}/resources")
    assert resources.status_code == 200, resources.text
    assert resources.json() == {
        "template": "python",
        "limits": {
            "cpus": 1.0,
            "memory_mb": 1024,
            "pids": 128,
            "disk_mb": 1024,
            "output_bytes": 1_000_000,
            "timeout": 60.0,
        },
        "egress": False,
        "allow": [],
    }
    assert hidden.status_code == 404 and hidden.json()["code"] == "sandbox_not_found"
    assert refused.status_code == 403 and refused.json()["code"] == "missing_scope"
