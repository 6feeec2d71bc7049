"""The isolation battery: hostile code in a real gVisor sandbox. Each attack must be contained,
the sandbox's control channel must keep answering, and the host must be unharmed after."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, MakeConfig, script, step
from warden.client.http import ApiError
from warden.client.sandbox import AsyncSandbox
from warden.testing import WardenHarness

if not shutil.which("runsc") and not IN_CI:
    pytest.skip("SKIPPING ISOLATION TESTS — runsc (gVisor) is not installed", allow_module_level=True)

HOST_SECRET = f"host-secret-{uuid.uuid4().hex}"
SANDBOX = {
    "backend": "gvisor",
    "templates": [
        {
            "name": "python",
            "hibernate_after": None,
            "limits": {"memory_mb": 512, "pids": 64, "disk_mb": 64, "output_bytes": 100_000, "timeout": 20},
        }
    ],
}


@pytest.fixture(scope="module")
def host_canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    canary = tmp_path_factory.mktemp("canary") / "canary.txt"
    canary.write_text(HOST_SECRET)
    return canary


@pytest.fixture
async def env(
    make_config: MakeConfig, host_canary: Path
) -> AsyncIterator[tuple[WardenHarness, dict[str, Any]]]:
    os.environ["WARDEN_TEST_HOST_SECRET"] = HOST_SECRET
    config = make_config(script=script(f"iso-{uuid.uuid4().hex[:8]}", step("ok")), sandbox=SANDBOX)
    async with WardenHarness(config, workers=0) as h:
        yield h, {"url": h.url, "api_key": h.admin_key}
        assert h.runtime is not None and h.runtime.sandboxes is not None
        for record in await h.runtime.sandboxes.list_sandboxes(
            (await h.runtime.keys.authenticate(h.admin_key)).tenant_id
        ):
            await h.runtime.sandboxes._destroy(record)
    os.environ.pop("WARDEN_TEST_HOST_SECRET", None)
    assert host_canary.read_text() == HOST_SECRET


async def _healthy(sb: AsyncSandbox) -> None:
    """The control channel answers and user code runs again (retrying while a sandbox that an
    attack stopped is being noticed and restarted)."""
    async with asyncio.timeout(60):
        while True:
            try:
                assert (await sb.run_code("6 * 7", timeout=20)).text == "42"
                return
            except ApiError as exc:
                if exc.code != "channel_closed":
                    raise
                await asyncio.sleep(1)


def _live_host_processes() -> int:
    """Host processes that are not zombies (this VM's init reaps exited ones slowly)."""
    live = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    live += f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except (OSError, IndexError):
                continue
    return live


async def _sh(sb: AsyncSandbox, cmd: str, timeout: float = 20) -> Any:
    return await sb.commands.run(cmd, timeout=timeout)


async def test_fork_bomb_is_contained(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    host_processes = _live_host_processes()
    sb = await AsyncSandbox.create(**settings)
    code = (
        "bomb() { bomb | bomb & }; bomb; sleep 2; "
        "python3 -c \"import os; print('procs', sum(p.isdigit() for p in os.listdir('/proc')))\""
    )
    try:
        result = await _sh(sb, code, timeout=10)
        # Contained inside: forks fail at the user's process limit; the sandbox lives.
        procs = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("procs ")]
        assert not procs or procs[0] <= 200
    except ApiError as exc:
        # Or the host-side backstop stopped the sandbox; the next use restarts it.
        assert exc.code == "channel_closed"  # noqa: PT017 - the recovery below is the point
    await _healthy(sb)
    await sb.kill()
    await sb.close()
    # Nothing outlives the sandbox on the host (its sentry's ptrace stubs go with it).
    async with asyncio.timeout(60):
        while _live_host_processes() >= host_processes + 20:
            await asyncio.sleep(0.5)


async def test_memory_bomb_is_contained(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    execution = await sb.run_code("hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))", timeout=20)
    assert execution.error is not None or execution.context_restarted
    await _healthy(sb)
    await sb.close()


async def test_cpu_spin_is_killed_at_the_timeout(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    await sb.run_code("before = 1")
    execution = await sb.run_code("while True:\n    pass", timeout=2)
    assert execution.error is not None
    assert execution.context_restarted
    await _healthy(sb)
    await sb.close()


async def test_disk_fill_stops_at_the_quota(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    h, settings = env
    sb = await AsyncSandbox.create(**settings)
    free_before = shutil.disk_usage(h.config.home).free
    result = await _sh(
        sb, "for i in 1 2 3 4; do head -c 40000000 /dev/zero > f$i || exit 9; done", timeout=60
    )
    assert result.exit_code == 9
    used = sum(e.size for e in await sb.files.list("/workspace"))
    assert used <= 70 * 2**20
    assert free_before - shutil.disk_usage(h.config.home).free < 100 * 2**20
    await _healthy(sb)
    await sb.close()


async def test_stdout_flood_is_capped(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    execution = await sb.run_code("while True:\n    print('x' * 1000)", timeout=3)
    assert sum(len(s) for s in execution.logs.stdout) <= 200_000
    await _healthy(sb)
    await sb.close()


async def test_rm_rf_root_harms_nothing_outside_the_workspace(
    env: tuple[WardenHarness, dict[str, Any]], host_canary: Path
) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    # Whether it finishes does not matter (most of / is read-only); what it can reach does.
    await _sh(sb, "timeout 8 rm -rf --no-preserve-root / 2>/dev/null; true", timeout=15)
    assert host_canary.read_text() == HOST_SECRET
    assert Path("/usr/bin/python3").exists()
    await _healthy(sb)
    await sb.close()


async def test_writes_outside_the_workspace_fail(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    for target in ("/usr/bin/evil", "/etc/passwd", "/opt/warden/sandboxd.py", "/evil"):
        result = await _sh(sb, f"echo pwned > {target}")
        assert result.exit_code != 0, target
    assert not Path("/usr/bin/evil").exists()
    await sb.close()


async def test_host_secrets_are_not_visible(
    env: tuple[WardenHarness, dict[str, Any]], host_canary: Path
) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    other = await AsyncSandbox.create(**settings)
    await other.files.write("private.txt", "other sandbox's data")
    result = await _sh(
        sb,
        f"cat /etc/shadow; ls /root; cat {host_canary}; cat /proc/1/environ; env; "
        "grep -rs 'other sandbox' /workspace /tmp /run /opt /etc /home /root /mnt /srv /var | head -1; "
        "cat /proc/*/environ 2>/dev/null",
        timeout=30,
    )
    seen = result.stdout + result.stderr
    assert HOST_SECRET not in seen
    assert "other sandbox's data" not in seen
    assert not re.search(r"^root:[^:\n]*:\d*:", seen, re.MULTILINE)  # no shadow entries
    await sb.close()
    await other.close()


async def test_proc_and_sys_do_not_describe_the_host(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    h, settings = env
    sb = await AsyncSandbox.create(**settings)
    result = await _sh(
        sb, "hostname; cat /proc/1/cmdline | tr '\\0' ' '; cat /proc/mounts; ls /sys/class/net"
    )
    assert socket.gethostname() not in result.stdout
    assert "sandboxd" in result.stdout
    assert str(h.config.home) not in result.stdout  # no host paths
    await sb.close()


async def test_raw_sockets_are_refused(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    execution = await sb.run_code("import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)")
    assert execution.error is not None
    execution = await sb.run_code(
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
    )
    assert execution.error is not None
    await sb.close()


async def test_host_services_and_metadata_are_unreachable(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    h, settings = env
    sb = await AsyncSandbox.create(**settings)
    port = int(h.url.rsplit(":", 1)[1])
    code = (
        "import socket\nout = []\n"
        f"for host, port in [('127.0.0.1', 5432), ('127.0.0.1', {port}), ('127.0.0.1', 6379), ('169.254.169.254', 80)]:\n"
        "    s = socket.socket(); s.settimeout(2)\n"
        "    try:\n        s.connect((host, port)); out.append('open')\n"
        "    except OSError as e:\n        out.append(type(e).__name__)\n"
        "out"
    )
    execution = await sb.run_code(code)
    assert execution.text is not None
    assert "open" not in execution.text
    await sb.close()


async def test_dns_does_not_resolve(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    execution = await sb.run_code("import socket\nsocket.getaddrinfo('exfil.example.com', 53)")
    assert execution.error is not None
    await sb.close()


async def test_privilege_escalation_fails(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    result = await _sh(
        sb,
        "id -u; grep CapEff /proc/self/status; "
        "mount -t tmpfs none /mnt 2>&1 && echo MOUNTED; "
        "su -c id root </dev/null 2>&1 | grep -q 'uid=0' && echo ROOTED; "
        "python3 -c \"import ctypes; print('init_module', ctypes.CDLL(None).syscall(175, 0, 0, 0))\"; "
        "python3 -c \"import ctypes; print('ptrace', ctypes.CDLL(None).ptrace(16, 1, 0, 0))\"",
    )
    out = result.stdout
    assert out.splitlines()[0] == "1000"
    assert "CapEff:\t0000000000000000" in out
    assert "MOUNTED" not in out
    assert "ROOTED" not in out
    assert "init_module -1" in out
    assert "ptrace -1" in out
    await sb.close()


async def test_the_file_api_cannot_escape(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    await _sh(sb, "ln -s /etc/passwd link; ln -s /opt/warden/sandboxd.py sup")
    for path in ("../../etc/passwd", "/etc/passwd", "link", "sup", "/workspace/../etc/hostname"):
        with pytest.raises(Exception, match="outside"):
            await sb.files.read(path)
    with pytest.raises(Exception, match="outside"):
        await sb.files.write("../escape.txt", "x")
    await sb.close()


async def test_user_code_cannot_touch_the_control_channel(env: tuple[WardenHarness, dict[str, Any]]) -> None:
    _, settings = env
    sb = await AsyncSandbox.create(**settings)
    killed = await _sh(sb, "kill -9 1; kill -9 -1; true")
    assert "Operation not permitted" in killed.stdout + killed.stderr
    connect = await sb.run_code(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/run/warden/control.sock')"
    )
    assert connect.error is not None
    assert connect.error.name in ("PermissionError", "FileNotFoundError")
    await _sh(sb, "head -c 100000000 /dev/zero > /tmp/fill; true")
    await _healthy(sb)
    await sb.close()
