"""Hostile requests get a clear 4xx and change nothing."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import MakeConfig, script, step
from warden.testing import WardenHarness


async def test_an_oversized_body_is_refused_before_it_is_read(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(f"big-{uuid.uuid4().hex[:8]}", step("ok")), server={"max_input_chars": 1000}
    )
    async with WardenHarness(config, workers=0) as h, h.client() as client:
        response = await client.post(
            "/v1/tasks", content=b'{"agent": "tester", "input": "' + b"x" * 200_000 + b'"}'
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert (await client.get("/v1/tasks")).json()["items"] == []


async def test_an_input_over_the_limit_is_refused(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(f"lim-{uuid.uuid4().hex[:8]}", step("ok")), server={"max_input_chars": 1000}
    )
    async with WardenHarness(config, workers=0) as h, h.client() as client:
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "y" * 1001})
        assert response.status_code == 422
        assert response.json()["code"] == "input_too_large"


async def test_a_huge_resume_point_is_harmless(make_config: MakeConfig) -> None:
    config = make_config(script=script(f"seq-{uuid.uuid4().hex[:8]}", step("ok")))
    async with WardenHarness(config) as h, h.client() as client:
        task = (await client.post("/v1/tasks", json={"agent": "tester", "input": "x"})).json()
        response = await client.get(
            f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": "9" * 19}, timeout=10
        )
        assert response.status_code == 200
        assert "event:" not in response.text
        too_long = await client.get(f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": "9" * 40})
        assert too_long.status_code == 422
        too_big = await client.get(f"/v1/tasks/{task['id']}/events", params={"after": 10**30})
        assert too_big.status_code == 422


async def test_metadata_that_is_too_large_is_refused(make_config: MakeConfig) -> None:
    config = make_config(script=script(f"meta-{uuid.uuid4().hex[:8]}", step("ok")))
    async with WardenHarness(config, workers=0) as h, h.client() as client:
        many = {f"k{i}": i for i in range(100)}
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "x", "metadata": many})
        assert response.status_code == 422
        nested = {"k": {"deep": [1, 2, 3]}}
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "x", "metadata": nested})
        assert response.status_code == 422


async def test_a_revoked_key_is_refused_at_once(make_config: MakeConfig) -> None:
    config = make_config(script=script(f"rev-{uuid.uuid4().hex[:8]}", step("ok")))
    async with WardenHarness(config, workers=0) as h:
        assert h.runtime is not None
        key = await h.key_for("acme")
        async with h.client(key) as client:
            assert (await client.get("/v1/tasks")).status_code == 200
            await h.runtime.keys.revoke(key.split("_")[1])
            response = await client.get("/v1/tasks")
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_api_key"


async def test_a_key_in_the_query_string_works_only_for_streams(make_config: MakeConfig) -> None:
    config = make_config(script=script(f"qs-{uuid.uuid4().hex[:8]}", step("ok")))
    async with WardenHarness(config) as h, h.client() as client:
        task = (await client.post("/v1/tasks", json={"agent": "tester", "input": "x"})).json()
        async with httpx.AsyncClient(base_url=h.url, timeout=10) as anonymous:
            refused = await anonymous.get(f"/v1/tasks/{task['id']}", params={"api_key": h.admin_key})
            assert refused.status_code == 401
            stream = await anonymous.get(f"/v1/tasks/{task['id']}/events", params={"api_key": h.admin_key})
            assert stream.status_code == 200
            assert "task.completed" in stream.text


async def test_metadata_with_lone_surrogates_is_refused(make_config: MakeConfig) -> None:
    """A JSON ``\\ud800`` escape parses into a string no response can encode: accepted, it made
    every later listing of the tenant's tasks fail."""
    config = make_config(script=script(f"sur-{uuid.uuid4().hex[:8]}", step("ok")))
    async with WardenHarness(config, workers=0) as h, h.client() as client:
        headers = {"content-type": "application/json"}
        for body in (
            b'{"agent": "tester", "input": "x", "metadata": {"k": "\\udfff"}}',
            b'{"agent": "tester", "input": "x", "metadata": {"\\ud800": 1}}',
        ):
            response = await client.post("/v1/tasks", content=body, headers=headers)
            assert response.status_code == 422
            assert response.json()["code"] == "invalid_input"
        session = await client.post(
            "/v1/sessions", content=b'{"agent": "tester", "metadata": {"k": "\\ud800"}}', headers=headers
        )
        assert session.status_code == 422
        listing = await client.get("/v1/tasks")
        assert listing.status_code == 200 and listing.json()["items"] == []
        # Edited arguments of an approval are refused before any approval is looked up.
        decide = await client.post(
            "/v1/approvals/apr_none",
            content=b'{"decision": "approve", "arguments": {"path": ["\\udc00"]}}',
            headers=headers,
        )
        assert decide.status_code == 422 and decide.json()["code"] == "invalid_input"
