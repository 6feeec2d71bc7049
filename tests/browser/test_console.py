"""The web console in headless Chromium against a real Warden server and a scripted model: a task
submitted in the console streams its events live, waits for an approval given in the inbox and
completes; the stream survives a server restart; ten thousand events keep the page responsive;
untrusted text never becomes markup; every main page renders."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import MakeConfig, script, step
from warden.config import ModelPrice
from warden.console import STATIC_DIR
from warden.events.types import EventType
from warden.testing import WardenHarness

ASK_NOTES = {
    "rules": [
        {"name": "notes-need-a-human", "tools": ["notes_write"], "decision": "ask", "reason": "writes notes"}
    ]
}
pytestmark = pytest.mark.asyncio(loop_scope="session")

HOSTILE = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'
PRICE = {"input_per_mtok": 2.5, "output_per_mtok": 10.0}


def _config(make_config: MakeConfig, *steps: Any, **extra: Any) -> Any:
    config = make_config(
        script=script(f"console-{uuid.uuid4().hex[:8]}", *steps),
        tools=["notes_write", "notes_read", "calculator"],
        policy=ASK_NOTES,
        **extra,
    )
    model = config.models["default"]
    config.models["default"] = model.model_copy(update={"price": ModelPrice(**PRICE)})
    return config


def _approval_script(
    first_text: str = "Let me write that down. ", final: str = "Saved the plan."
) -> tuple[Any, ...]:
    return (
        step(first_text + HOSTILE, ("notes_write", {"title": "plan", "body": "ship it"}), chunk_delay=0.02),
        step(final, chunk_delay=0.01),
    )


async def _wait_status(client: httpx.AsyncClient, task_id: str, wanted: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            task: dict[str, Any] = (await client.get(f"/v1/tasks/{task_id}")).json()
            if task["status"] == wanted:
                return task
            await asyncio.sleep(0.05)


async def _event_seqs(page: Page) -> list[int]:
    """Every seq in the virtualised event list, read by scrolling it from top to bottom."""
    seqs: list[int] = await page.evaluate(
        """async () => {
            const viewport = document.querySelector(".event-viewport");
            const frame = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
            const seen = new Map();
            viewport.scrollTop = 0;
            for (;;) {
                await frame();
                for (const row of viewport.querySelectorAll("[data-seq]")) seen.set(+row.dataset.index, +row.dataset.seq);
                if (viewport.scrollTop + viewport.clientHeight >= viewport.scrollHeight - 1) break;
                viewport.scrollTop += viewport.clientHeight;
            }
            return [...seen.entries()].sort((a, b) => a[0] - b[0]).map(([, seq]) => seq);
        }"""
    )
    return seqs


async def _assert_untrusted_text_stayed_text(page: Page) -> None:
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img[src='x'], main script").count() == 0


async def test_a_task_submitted_in_the_console_streams_waits_for_approval_and_completes(
    make_config: MakeConfig, page: Page
) -> None:
    config = _config(make_config, *_approval_script())
    async with WardenHarness(config) as h, h.client() as client:
        # A wrong key is refused with a reason, and nothing else of the console shows.
        await page.goto(h.url + "/")
        await page.get_by_label("API key").fill("wk_000000000000_not-a-key")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_contain_text("does not know this key")
        await expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
        await screenshot(page, "00-sign-in")
        await sign_in(page, h.url, h.admin_key)
        await expect(page.get_by_text("No tasks yet.")).to_be_visible()
        await screenshot(page, "01-tasks-empty")

        await page.locator("form.new-task").get_by_label("Agent").select_option("tester")
        await page.get_by_label("Input").fill(f"Write the plan {HOSTILE}")
        await page.get_by_role("button", name="Submit task").click()
        await page.wait_for_url("**/#/tasks/task_*")
        task_id = page.url.rsplit("/", 1)[-1]

        # The model's words and the tool call appear as they stream.
        stream = page.locator(".transcript")
        await expect(stream).to_contain_text("Let me write that down.")
        await expect(stream.locator(".call .tool-name")).to_have_text("notes_write")
        await expect(stream.locator(".call")).to_contain_text('"body": "ship it"')
        await expect(stream.locator(".call .badge")).to_have_text("awaiting approval")
        await expect(page.locator(".page-header .badge")).to_have_text("awaiting approval")
        await expect(page.locator(".connection")).to_have_text("live")
        await _assert_untrusted_text_stayed_text(page)
        await screenshot(page, "02-task-awaiting-approval")

        # The inbox: edit the arguments, give a reason, approve.
        await page.get_by_role("link", name="Approvals").click()
        card = page.locator("article.approval").filter(has_text=task_id)
        await expect(card).to_be_visible()
        await card.get_by_label("Arguments").fill('{"title": "plan", "body": "ship it on Monday"}')
        await card.get_by_label("Reason").fill("Monday is fine")
        await screenshot(page, "03-approvals-inbox")
        await card.get_by_role("button", name="Approve notes_write").click()
        await expect(card.locator(".decided")).to_contain_text("Approved by key:")
        await expect(card.locator(".decided")).to_contain_text("edited arguments")

        # Back on the task: it resumes and completes, live.
        await card.get_by_role("link", name=task_id).click()
        await expect(page.locator(".page-header .badge")).to_have_text("completed", timeout=20_000)
        await expect(page.locator(".connection")).to_have_text("ended")
        await expect(page.locator("pre.output")).to_have_text("Saved the plan.")
        await expect(stream.locator(".call .badge")).to_have_text("done")
        await expect(stream.locator(".call .decision")).to_contain_text("Policy: ask")
        await expect(stream.locator(".call .approval-inline")).to_contain_text("Approved by key:")
        await expect(stream.locator(".call .args")).to_contain_text("ship it on Monday")
        task = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert task["status"] == "completed"
        await expect(page.locator("#event-count")).to_have_text(str(task["last_seq"]))
        assert await _event_seqs(page) == list(range(1, task["last_seq"] + 1))
        # Usage, the cost at the agent's model price, and the waterfall's spans.
        total = task["usage"]["total"]
        cost = (total["input_tokens"] * 2.5 + total["output_tokens"] * 10.0) / 1_000_000
        await expect(page.locator("#task-cost")).to_have_text(
            f"${cost:.6f}" if cost < 0.01 else f"${cost:.4f}"
        )
        await expect(page.locator(".waterfall")).to_contain_text("model · step 1")
        labels = await page.locator(".waterfall .wf-label").all_inner_texts()
        assert labels[0] == "queued" and "model · step 0" in labels and "tool · notes_write" in labels
        assert "approval · notes_write" in labels and "model · step 1" in labels
        await _assert_untrusted_text_stayed_text(page)
        await screenshot(page, "04-task-completed")

        # The tasks list shows it with its final status; the filters narrow the list.
        await page.get_by_role("link", name="Tasks").click()
        row = page.locator("table.data tbody tr").filter(has_text=task_id)
        await expect(row.locator(".badge")).to_have_text("completed")
        await page.get_by_label("Status").select_option("failed")
        await expect(page.get_by_text("No tasks match these filters.")).to_be_visible()
        await page.get_by_label("Status").select_option("completed")
        await expect(row).to_be_visible()

        await _visit_the_other_pages(page, task)


async def _visit_the_other_pages(page: Page, task: dict[str, Any]) -> None:
    await page.get_by_role("link", name="Sessions", exact=True).click()
    await page.get_by_role("link", name=task["session_id"]).click()
    await expect(page.locator(".messages")).to_contain_text("Saved the plan.")
    await screenshot(page, "05-session")

    await page.get_by_role("link", name="Agents").click()
    await expect(page.locator("table.data")).to_contain_text("tester")
    await page.get_by_role("link", name="tester", exact=True).click()
    await expect(page.locator(".versions li")).to_have_count(1)
    await expect(page.locator(".facts")).to_contain_text("$2.5 in / $10 out per million tokens")
    await screenshot(page, "06-agent")

    await page.get_by_role("link", name="Audit log").click()
    await expect(page.locator("#audit-verification")).to_contain_text("Chain verified.")
    await expect(page.locator("table.data")).to_contain_text("approval.decided")
    await screenshot(page, "07-audit-log")

    # Keyboard: "g t" goes to tasks, "j" focuses the first row's link, Enter opens it.
    await page.locator("body").press("g")
    await page.locator("body").press("t")
    await expect(page).to_have_url(re.compile(r"#/tasks$"))
    await expect(page.locator("table.data tbody tr")).to_have_count(1)
    await page.locator("body").press("j")
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_contain_text(task["id"])


async def test_the_stream_reconnects_after_a_server_restart_and_resumes_after_the_last_event(
    make_config: MakeConfig, page: Page
) -> None:
    config = _config(make_config, *_approval_script(final="Saved after the restart."))
    async with WardenHarness(config) as first, first.client() as client:
        key, port = first.admin_key, first.port
        task_id = (await client.post("/v1/tasks", json={"agent": "tester", "input": "plan"})).json()["id"]
        await _wait_status(client, task_id, "awaiting_approval")
        await sign_in(page, first.url, key)
        await page.goto(f"{first.url}/#/tasks/{task_id}")
        await expect(page.locator(".call .badge")).to_have_text("awaiting approval")
        seen = await _event_seqs(page)
    # The server is down: the page says so and keeps trying.
    await expect(page.locator(".connection")).to_contain_text("reconnecting")
    second = WardenHarness(config)
    second.port, second.url = port, f"http://127.0.0.1:{port}"
    async with second, second.client(key) as client:
        (approval,) = (await client.get("/v1/approvals", params={"task_id": task_id})).json()["items"]
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        await expect(page.locator(".page-header .badge")).to_have_text("completed", timeout=20_000)
        await expect(page.locator("pre.output")).to_have_text("Saved after the restart.")
        last_seq = (await client.get(f"/v1/tasks/{task_id}")).json()["last_seq"]
        await expect(page.locator("#event-count")).to_have_text(str(last_seq))
    # Every event once, in order: the ones before the restart and the ones resumed after them.
    seqs = await _event_seqs(page)
    assert seqs == list(range(1, last_seq + 1)) and seqs[: len(seen)] == seen


async def test_ten_thousand_events_stream_without_freezing_the_page(
    make_config: MakeConfig, page: Page
) -> None:
    config = _config(make_config, *_approval_script())
    total_events = 10_000
    async with WardenHarness(config) as h, h.client() as client:
        task_id = (await client.post("/v1/tasks", json={"agent": "tester", "input": "plan"})).json()["id"]
        task = await _wait_status(client, task_id, "awaiting_approval")
        await sign_in(page, h.url, h.admin_key)
        await page.goto(f"{h.url}/#/tasks/{task_id}")
        await expect(page.locator("#event-count")).to_have_text(str(task["last_seq"]))
        # Record every main-thread task over 50 ms (the browser's own "long task" measure).
        await page.evaluate(
            """() => { window.__longTasks = [];
                new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
                  .observe({ type: "longtask" }); }"""
        )
        (call_id,) = [c["call_id"] for c in (await client.get("/v1/approvals")).json()["items"]]
        assert h.runtime is not None
        started = time.monotonic()
        # A burst of tool output, live, in batches the way a chatty tool would produce it.
        for batch in range(10):
            items = [
                (
                    EventType.TOOL_OUTPUT,
                    {"call_id": call_id, "text": f"line {batch * 1000 + i} <b>not bold</b>\n"},
                )
                for i in range(1000)
            ]
            async with h.runtime.log.transaction() as tx:
                await tx.emit_many(task_id, items)
        expected = str(task["last_seq"] + total_events)
        await expect(page.locator("#event-count")).to_have_text(expected, timeout=30_000)
        elapsed = time.monotonic() - started
        long_tasks: list[float] = await page.evaluate("window.__longTasks")
        rows = await page.locator(".event-viewport [data-seq]").count()
        # Every event can be reached: Home selects the first, End the last.
        await page.get_by_role("table", name="Task events, oldest first").press("Home")
        await expect(page.locator(".event-detail")).to_contain_text('"seq": 1,')
        await page.get_by_role("table", name="Task events, oldest first").press("End")
        await expect(page.locator(".event-detail")).to_contain_text(f'"seq": {expected},')
        first_rows = await page.locator(".event-viewport [data-seq]").evaluate_all(
            "(rows) => rows.map((row) => +row.dataset.seq)"
        )
        # The page still answers input at once.
        probe_started = time.monotonic()
        await page.get_by_role("link", name="Approvals").click()
        await expect(page.locator("h1")).to_have_text("Approvals")
        probe = time.monotonic() - probe_started
    print(
        f"\n10,000 events rendered in {elapsed:.2f} s; long tasks: {len(long_tasks)}, "
        f"longest {max(long_tasks, default=0):.0f} ms; navigation after the burst: {probe * 1000:.0f} ms"
    )
    # Only the rows in view exist in the page, yet every event can be scrolled to.
    assert 0 < rows <= 60, rows
    assert first_rows == list(range(int(expected) - len(first_rows) + 1, int(expected) + 1))
    assert max(long_tasks, default=0) < 400, long_tasks
    assert probe < 2.0


async def test_console_responses_carry_a_strict_content_security_policy(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config()) as h, httpx.AsyncClient(base_url=h.url) as anonymous:
        for path in ("/", "/console/app.js", "/console/console.css", "/console/pages/task.js"):
            response = await anonymous.get(path)
            assert response.status_code == 200, path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
        assert (await anonymous.get("/")).headers["content-type"].startswith("text/html")
        assert "javascript" in (await anonymous.get("/console/app.js")).headers["content-type"]
        missing = await anonymous.get("/console/nothing-here.js")
        assert missing.status_code == 404
        traversal = await anonymous.get("/console/..%2f..%2fconfig.py")
        assert traversal.status_code == 404


async def test_agents_carry_their_models_price_for_the_consoles_cost_estimate(
    make_config: MakeConfig,
) -> None:
    priced = _config(make_config, step("ok"))
    async with WardenHarness(priced) as h, h.client() as client:
        listed = {a["name"]: a for a in (await client.get("/v1/agents")).json()}
        one = (await client.get("/v1/agents/tester")).json()
    assert listed["tester"]["price"] == one["price"] == PRICE
    async with WardenHarness(make_config()) as h, h.client() as client:
        assert (await client.get("/v1/agents/tester")).json()["price"] is None


async def test_the_consoles_scripts_never_turn_strings_into_markup_or_code() -> None:
    """Untrusted text reaches the page only as text nodes and attribute values: no script uses
    an HTML sink or evaluates strings, and the page has no inline script or style to allow."""
    sinks = re.compile(
        r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function\(|setAttribute\(\s*[\"']on"
    )
    scripts = sorted(STATIC_DIR.rglob("*.js"))
    assert len(scripts) >= 10
    for script_path in scripts:
        source = script_path.read_text()
        assert not sinks.search(source), f"{script_path.name}: {sinks.search(source)}"
    page = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline script"
    assert not re.search(r"\son[a-z]+=|\sstyle=", page), "inline handler or style"
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "a resource from another origin"
