"""Sandbox egress end to end, on real gVisor and bubblewrap: programs in the sandbox reach an
allowed test host through the egress proxy, and nothing else. The test host lives in a network
namespace this test creates (a veth pair with TEST-NET-3 addresses, no route anywhere else), so
no packet leaves the machine; blocked destinations are refused by the proxy before any packet."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import IN_CI, MakeConfig, script, step
from warden.testing import WardenHarness

HOST_SIDE, TEST_HOST = "203.0.113.1", "203.0.113.2"
"""TEST-NET-3 (RFC 5737): documentation addresses, routed here only into the test's namespace."""
BINARIES = {"gvisor": "runsc", "bwrap": "bwrap"}


def _require(kind: str) -> None:
    if IN_CI:
        return
    if not shutil.which(BINARIES[kind]) or os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip(f"SKIPPING EGRESS TESTS ON {kind.upper()} — needs {BINARIES[kind]}, root and iproute2")


@pytest.fixture(scope="module")
def test_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server at 203.0.113.2:80 inside a fresh network namespace, reachable from the
    host through a veth pair and from nowhere else."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        if IN_CI:
            pytest.fail("egress tests need root and iproute2 on CI")
        pytest.skip("SKIPPING EGRESS TESTS — needs root and iproute2")
    tag = uuid.uuid4().hex[:6]
    namespace, veth, peer = f"wdn-egress-{tag}", f"wdneg{tag}", f"wdnep{tag}"
    root = tmp_path_factory.mktemp("egress-host")
    (root / "hello.txt").write_text("hello from the test host\n")

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    ip("netns", "add", namespace)
    server: subprocess.Popen[bytes] | None = None
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", namespace)
        ip("addr", "add", f"{HOST_SIDE}/30", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", namespace, "addr", "add", f"{TEST_HOST}/30", "dev", peer)
        ip("-n", namespace, "link", "set", peer, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "http.server", "80",
             "--bind", TEST_HOST, "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(TEST_HOST, 80)
        yield TEST_HOST
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


def _wait_for_port(host: str, port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _templates(kind: str) -> dict[str, Any]:
    common = {"backend": kind, "pool_size": 0, "hibernate_after": None}
    return {
        "backend": kind,
        "default_template": "online",
        "templates": [
            {
                **common,
                "name": "online",
                "network": {
                    "egress": True,
                    "allow": [f"{TEST_HOST}/32", "*.warden.test", "0.0.0.0/0"],
                    "ports": [80],
                    "hosts": {"files.warden.test": [TEST_HOST], "metadata.warden.test": ["169.254.169.254"]},
                },
            },
            {**common, "name": "offline"},
        ],
    }


@pytest.fixture(params=["gvisor", "bwrap"])
async def harness(
    request: pytest.FixtureRequest, make_config: MakeConfig, test_host: str
) -> AsyncIterator[WardenHarness]:
    _require(request.param)
    config = make_config(
        script=script(f"egress-{uuid.uuid4().hex[:8]}", step("ok")), sandbox=_templates(request.param)
    )
    async with WardenHarness(config) as h:
        yield h
        assert h.runtime is not None and h.runtime.sandboxes is not None
        manager = h.runtime.sandboxes
        tenant_id = (await h.runtime.keys.authenticate(h.admin_key)).tenant_id
        for record in await manager.list_sandboxes(tenant_id):
            await manager._destroy(record)


async def _python(h: WardenHarness, sandbox_id: str, code: str) -> dict[str, Any]:
    async with h.client() as client:
        response = await client.post(f"/v1/sandboxes/{sandbox_id}/code", json={"code": code}, timeout=90)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _create(h: WardenHarness, template: str) -> str:
    async with h.client() as client:
        response = await client.post("/v1/sandboxes", json={"template": template}, timeout=90)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


FETCH = """
import urllib.request, urllib.error
def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 'error', str(e)
"""


async def test_a_program_reaches_an_allowed_host_through_the_proxy_by_address_and_by_name(
    harness: WardenHarness,
) -> None:
    sandbox_id = await _create(harness, "online")
    await _python(harness, sandbox_id, FETCH)
    by_address = await _python(harness, sandbox_id, f"fetch('http://{TEST_HOST}/hello.txt')")
    assert by_address["value"] == repr((200, "hello from the test host\n")), by_address
    by_name = await _python(harness, sandbox_id, "fetch('http://files.warden.test/hello.txt')")
    assert by_name["value"] == repr((200, "hello from the test host\n")), by_name


BLOCKED = [
    ("http://169.254.169.254/latest/meta-data/", "always blocked"),
    ("http://metadata.warden.test/latest/meta-data/", "always blocked"),  # allowed name, metadata address
    ("http://127.0.0.2/", "always blocked"),  # 127.0.0.1 itself bypasses the proxy (NO_PROXY)
    ("http://10.0.0.1/", "always blocked"),
    ("http://[::ffff:127.0.0.1]/", "always blocked"),
    ("http://not-listed.example/", "not in the egress allow-list"),
    (f"http://{TEST_HOST}:8080/", "port 8080 is not allowed"),
]


async def test_blocked_destinations_are_refused_by_the_proxy_with_the_reason(harness: WardenHarness) -> None:
    sandbox_id = await _create(harness, "online")
    await _python(harness, sandbox_id, FETCH)
    urls = [url for url, _ in BLOCKED]
    result = await _python(harness, sandbox_id, f"[fetch(u) for u in {urls!r}]")
    answers = ast.literal_eval(result["value"])
    for (url, reason), (status, body) in zip(BLOCKED, answers, strict=True):
        assert status == 403 and reason in body, (url, status, body)


async def test_direct_connections_bypassing_the_proxy_fail_the_sandbox_has_no_network(
    harness: WardenHarness,
) -> None:
    sandbox_id = await _create(harness, "online")
    result = await _python(
        harness,
        sandbox_id,
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({TEST_HOST!r}, 80), timeout=3); outcome = 'connected'\n"
        "except OSError as e:\n"
        "    outcome = type(e).__name__\n"
        "outcome",
    )
    assert result["value"] != repr("connected"), result


async def test_a_sandbox_without_egress_has_no_proxy(harness: WardenHarness) -> None:
    sandbox_id = await _create(harness, "offline")
    await _python(harness, sandbox_id, FETCH)
    result = await _python(
        harness, sandbox_id, "import os; (os.environ.get('HTTP_PROXY'), fetch('http://127.0.0.1:3128/'))"
    )
    proxy, (status, _) = ast.literal_eval(result["value"])
    assert proxy is None and status == "error", result


@pytest.mark.parametrize("harness", ["gvisor"], indirect=True)  # bubblewrap cannot hibernate memory
async def test_egress_works_again_after_hibernation(harness: WardenHarness) -> None:
    assert harness.runtime is not None and harness.runtime.sandboxes is not None
    manager = harness.runtime.sandboxes
    sandbox_id = await _create(harness, "online")
    await _python(harness, sandbox_id, FETCH)
    tenant_id = (await harness.runtime.keys.authenticate(harness.admin_key)).tenant_id
    record = await manager.get(tenant_id, sandbox_id)
    assert await manager.hibernate(record)
    result = await _python(harness, sandbox_id, f"fetch('http://{TEST_HOST}/hello.txt')")
    assert result["value"] == repr((200, "hello from the test host\n")), result


@pytest.mark.parametrize("harness", ["gvisor"], indirect=True)
async def test_user_code_cannot_attach_to_the_egress_socket(harness: WardenHarness) -> None:
    """Only the supervisor (root in the sandbox) talks to the host's end: a program that could
    attach would receive other programs' connections. (Under bubblewrap the supervisor and user
    code share one uid, so this holds on gVisor only; docs/security.md says so.)"""
    sandbox_id = await _create(harness, "online")
    result = await _python(
        harness,
        sandbox_id,
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect('/run/warden/egress.sock'); outcome = 'attached'\n"
        "except OSError as e:\n"
        "    outcome = type(e).__name__\n"
        "outcome",
    )
    assert result["value"] == repr("PermissionError"), result
