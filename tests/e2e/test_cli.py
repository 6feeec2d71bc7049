"""The CLI as a user meets it: the demo, serve + run + tasks, keys, and errors that are one
clear line rather than a traceback. Every command runs as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warden.testing import free_port

KEY = re.compile(r"wk_[0-9a-f]{12}_[A-Za-z0-9]+")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARDEN_", "OPENAI_", "ANTHROPIC_"))}
    env.update(PYTHONUNBUFFERED="1", CI="true", COLUMNS="200", WARDEN_HOME=str(tmp / "home"), **extra)
    return env


def warden(tmp: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warden", *args],
        cwd=tmp,
        env=_env(tmp, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_demo_runs_the_scripted_agent_and_says_where_things_are(tmp_path: Path) -> None:
    result = warden(tmp_path, "demo", "--port", str(free_port()), "--no-stay", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "scripted model" in out
    assert "calculator" in out
    assert "7006652" in out
    assert "completed" in out
    assert "/docs" in out
    assert "warden.log" in out
    assert "Traceback" not in out + result.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "warden", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    key = None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline and key is None:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = KEY.search(line)
        key = match.group(0) if match else None
    assert key is not None, "serve printed no bootstrap key:\n" + "".join(seen)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield url, key, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_serve_then_run_list_show_and_logs(
    tmp_path: Path, server: tuple[str, str, subprocess.Popen[str]]
) -> None:
    url, key, _ = server
    auth = {"WARDEN_URL": url, "WARDEN_API_KEY": key}
    ran = warden(tmp_path, "run", "what is 1234 * 5678?", "--agent", "demo", **auth)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "calculator" in ran.stdout
    assert "completed" in ran.stdout
    task_id = re.search(r"task (task_[0-9a-z]+)", ran.stdout).group(1)  # type: ignore[union-attr]

    listed = warden(tmp_path, "tasks", "list", **auth)
    assert task_id in listed.stdout
    assert "completed" in listed.stdout

    shown = warden(tmp_path, "tasks", "show", task_id, **auth)
    assert "completed" in shown.stdout
    assert "7,006,652" in shown.stdout

    logs = warden(tmp_path, "tasks", "logs", task_id, "--json", **auth)
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "task.completed"


def test_serve_stops_cleanly_on_sigterm(
    tmp_path: Path, server: tuple[str, str, subprocess.Popen[str]]
) -> None:
    _, _, proc = server
    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is done, as a server should.
    assert proc.wait(20) in (0, -signal.SIGTERM)
    log = (tmp_path / "home" / "logs" / "warden.log").read_text()
    assert re.search(r"worker \S+ stopped", log)


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = warden(tmp_path, "keys", "create", "--name", "ci", "--tenant", "acme", "--scope", "tasks:read")
    assert created.returncode == 0, created.stderr
    key = KEY.search(created.stdout)
    assert key is not None
    prefix = key.group(0).split("_")[1]
    listed = warden(tmp_path, "keys", "list")
    assert prefix in listed.stdout
    assert "active" in listed.stdout
    assert key.group(0) not in listed.stdout
    revoked = warden(tmp_path, "keys", "revoke", prefix)
    assert revoked.returncode == 0
    assert "revoked" in warden(tmp_path, "keys", "list").stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("run", "hello"), {}, "no API key"),
        (("run", "hello"), {"WARDEN_API_KEY": "wk_x_y", "WARDEN_URL": "http://127.0.0.1:9"}, "cannot reach"),
        (("keys", "create", "--name", "x", "--scope", "root"), {}, "unknown scope"),
        (("keys", "revoke", "nope"), {}, "no active API key"),
    ],
)
def test_errors_are_one_clear_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = warden(tmp_path, *args, **env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("models: [\n", "not valid YAML"),
        ("worker:\n  concurency: 3\n", "worker.concurency"),
        ("agents:\n  - name: Bad Name!\n", "agents.0.name"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_a_bad_config_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "warden.yaml"
    config.write_text(content)
    result = warden(tmp_path, "keys", "list", "--config", str(config))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _mcp_config(tmp: Path) -> Path:
    server = Path(sys.executable).parent / "mcp-server-time"
    path = tmp / "warden.yaml"
    path.write_text(f"mcp_servers:\n  - name: time\n    command: {json.dumps(str(server))}\n")
    return path


def test_mcp_list_inspect_approve_pins_a_real_server(tmp_path: Path) -> None:
    config = str(_mcp_config(tmp_path))
    listed = warden(tmp_path, "mcp", "list", "--config", config)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "time.get_current_time" in listed.stdout and "pending" in listed.stdout

    inspected = warden(tmp_path, "mcp", "inspect", "time", "get_current_time", "--config", config)
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    assert re.search(r"[0-9a-f]{12}", inspected.stdout) and "timezone" in inspected.stdout

    approved = warden(tmp_path, "mcp", "approve", "time", "--by", "alice", "--config", config)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved time.get_current_time" in approved.stdout and "alice" in approved.stdout

    offline = warden(tmp_path, "mcp", "list", "--offline", "--config", config)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    line = next(x for x in offline.stdout.splitlines() if "time.get_current_time" in x)
    assert "approved" in line


def test_mcp_commands_on_an_unknown_server_are_one_clear_line(tmp_path: Path) -> None:
    config = str(_mcp_config(tmp_path))
    for args in (("inspect", "nope"), ("approve", "nope")):
        result = warden(tmp_path, "mcp", *args, "--config", config)
        assert result.returncode != 0
        assert "nope" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr


def test_an_invalid_policy_file_stops_serve_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "warden.yaml").write_text("policy:\n  files: [policies.yaml]\n")
    (tmp_path / "policies.yaml").write_text(
        "rules:\n  - name: big-payments\n    tools: ['pay*']\n    decision: ask\n    when: {amount: {greater: 1000}}\n"
    )
    result = warden(tmp_path, "serve", "--port", str(free_port()), timeout=60)
    assert result.returncode != 0
    assert "policies.yaml:5" in result.stdout + result.stderr and "greater" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
