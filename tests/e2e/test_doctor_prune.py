"""`warden doctor` and `warden prune` as a user runs them: real subprocesses, one line per
finding with a fix, exit code 1 on any failure, never a traceback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import yaml

from tests.e2e.test_cli import warden
from warden.testing import FakeLLMServer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens once the socket is closed


def _write(tmp: Path, config: dict[str, object]) -> Path:
    path = tmp / "warden.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_doctor_passes_a_good_configuration(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    path = _write(
        tmp_path,
        {
            "database_url": f"sqlite:///{tmp_path / 'warden.db'}",
            "models": {
                "default": {"provider": "openai", "model": "m", "base_url": fake_llm.url, "api_key": "x"},
                "demo": {"provider": "scripted"},
            },
        },
    )
    result = warden(tmp_path, "doctor", "-c", str(path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out
    for name in (
        "config",
        "gvisor",
        "database",
        "migrations",
        "redis",
        "model default",
        "model demo",
        "pii model",
        "disk",
    ):
        assert re.search(rf"^\s*(ok|warn|skip)\s+{re.escape(name)}\b", out, re.M), (name, out)
    assert re.search(r"^\s*ok\s+gvisor\b.*runsc do true", out, re.M), out
    assert "0 failed" in out


def test_doctor_fails_a_broken_configuration_with_hints(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "database_url": f"postgresql+asyncpg://warden@127.0.0.1:{_closed_port()}/warden",
            "models": {
                "default": {
                    "provider": "openai",
                    "model": "m",
                    "base_url": f"http://127.0.0.1:{_closed_port()}/v1",
                    "api_key_env": "NOT_SET_ANYWHERE",
                }
            },
        },
    )
    result = warden(
        tmp_path, "doctor", "-c", str(path), WARDEN_REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert re.search(r"^\s*fail\s+database\b", out, re.M), out
    assert re.search(r"^\s*fail\s+redis\b", out, re.M), out
    assert re.search(r"^\s*fail\s+model default\b.*unreachable", out, re.M), out
    assert re.search(r"^\s*warn\s+model default\b.*NOT_SET_ANYWHERE", out, re.M), out
    assert "→ start the database" in out


def test_doctor_reports_an_invalid_file_as_one_failed_check(tmp_path: Path) -> None:
    path = tmp_path / "warden.yaml"
    path.write_text("server: {prot: 1}\n", encoding="utf-8")
    result = warden(tmp_path, "doctor", "-c", str(path))
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert re.search(r"^\s*fail\s+config\b", out, re.M), out
    assert "server.prot: Extra inputs are not permitted" in out
    assert "Traceback" not in out


def test_prune_needs_a_ttl_and_reports_counts(tmp_path: Path) -> None:
    path = _write(tmp_path, {"database_url": f"sqlite:///{tmp_path / 'warden.db'}"})
    refused = warden(tmp_path, "prune", "-c", str(path))
    assert refused.returncode == 1
    assert "nothing to prune" in refused.stderr
    dry = warden(tmp_path, "prune", "-c", str(path), "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert re.search(r"finished tasks\s+0", dry.stdout), dry.stdout
    assert "audit log is never pruned" in dry.stdout
    assert "Traceback" not in dry.stdout + dry.stderr
