"""A Warden cluster of real processes for fault tests: API processes (`warden serve --role api`)
and worker processes (`warden serve --role worker`), configured only through `WARDEN_*`
environment variables and one warden.yaml, sharing a PostgreSQL database and optionally Redis.
Tools leave a line per side effect in a file (`tests/support_tools.py`), so a test can count
how often each one ran. An in-test runtime (no workers, no Redis) creates the key and reads state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from httpx_sse import aconnect_sse

from tests.cluster._services import free_port
from tests.support_tools import payer_config
from warden.config import load_config
from warden.events.types import Event
from warden.runtime import Runtime
from warden.store.tasks import TaskRecord

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}


class ApiProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log


class WardenCluster:
    def __init__(
        self,
        tmp: Path,
        *,
        database_url: str,
        redis_url: str | None,
        model_url: str,
        model: str,
        worker: dict[str, Any] | None = None,
        max_attempts: int = 3,
    ) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.side_effects = tmp / "side_effects.log"
        self.side_effects.touch()
        self.config_path = tmp / "warden.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                payer_config(
                    model,
                    model_url,
                    {
                        "lease_ttl": 4,
                        "poll_interval": 0.2,
                        "reap_interval": 0.3,
                        "cancel_poll_interval": 0.2,
                        "retry_backoff": 0.2,
                        "max_attempts": max_attempts,
                        **(worker or {}),
                    },
                )
            )
        )
        # Everything that differs per deployment comes from the environment, as in production.
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "WARDEN_CONFIG": str(self.config_path),
            "WARDEN_DATABASE_URL": database_url,
            "WARDEN_TEST_SIDE_EFFECTS": str(self.side_effects),
            "WARDEN_LOG_LEVEL": "INFO",
        }
        if redis_url is not None:
            self.env["WARDEN_REDIS_URL"] = redis_url
        else:
            self.env.pop("WARDEN_REDIS_URL", None)
        self.apis: list[ApiProcess] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self.runtime: Runtime | None = None
        self.key = ""

    async def __aenter__(self) -> WardenCluster:
        os.environ["WARDEN_TEST_SIDE_EFFECTS"] = str(self.side_effects)
        config = load_config(self.config_path).model_copy(
            update={"database_url": self.database_url, "redis_url": None, "home": self.tmp / "test-home"}
        )
        self.runtime = await Runtime.open(config)
        self.key = (await self.runtime.keys.create("acme", name="cluster test", scopes=["admin"])).secret
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if self.runtime is not None:
            await self.runtime.close()

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=self.tmp,
                env={**self.env, "WARDEN_HOME": str(self.tmp / name), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._procs.append(proc)
        return proc, log_path

    def start_worker(
        self, *, env: dict[str, str] | None = None, module: str = "warden"
    ) -> subprocess.Popen[bytes]:
        name = f"worker{len(self.workers)}"
        proc, _ = self._spawn(name, [sys.executable, "-m", module, "serve", "--role", "worker"], env or {})
        self.workers.append(proc)
        return proc

    async def start_apis(self, count: int) -> list[ApiProcess]:
        started = []
        for _ in range(count):
            port = free_port()
            name = f"api{len(self.apis)}"
            proc, log = self._spawn(
                name,
                [sys.executable, "-m", "warden", "serve", "--role", "api"],
                {"WARDEN_SERVER__PORT": str(port)},
            )
            api = ApiProcess(proc, port, log)
            self.apis.append(api)
            started.append(api)
        await asyncio.gather(*(self._wait_healthy(api) for api in started))
        return started

    async def _wait_healthy(self, api: ApiProcess, within: float = 60.0) -> None:
        async with asyncio.timeout(within), httpx.AsyncClient(base_url=api.url, timeout=2) as client:
            while True:
                if api.proc.poll() is not None:
                    raise RuntimeError(f"API process exited: {api.log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def worker_by_id(self, worker_id: str) -> subprocess.Popen[bytes]:
        """The worker process whose id (``host:pid:suffix``) is ``worker_id``."""
        pid = int(worker_id.split(":")[1])
        return next(p for p in self.workers if p.pid == pid)

    # -- clients ---------------------------------------------------------------------------

    def client(self, api: int = 0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.apis[api].url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        )

    async def submit(self, text: str, *, api: int = 0, key: str | None = None, within: float = 30.0) -> str:
        """POST a task, retrying (with the same idempotency key) on 5xx and dropped connections."""
        body: dict[str, Any] = {"agent": "payer", "input": text}
        if key is not None:
            body["idempotency_key"] = key
        async with asyncio.timeout(within), self.client(api) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    response = await client.post("/v1/tasks", json=body)
                    if response.status_code in (200, 202):
                        task_id: str = response.json()["id"]
                        return task_id
                    assert response.status_code >= 500, response.text
                await asyncio.sleep(0.2)
        raise AssertionError(f"could not submit {text!r}")

    async def stream(
        self, task_id: str, *, apis: list[int] | None = None, on_event: Any = None, within: float = 60.0
    ) -> list[dict[str, Any]]:
        """Every event of the task over SSE, reconnecting with Last-Event-ID to the next API
        process whenever a connection breaks. ``on_event(event)`` sees each as it arrives."""
        order = apis if apis is not None else list(range(len(self.apis)))
        events: list[dict[str, Any]] = []
        attempt = 0
        async with asyncio.timeout(within):
            while attempt < 100:
                api = order[attempt % len(order)]
                headers = {"Last-Event-ID": str(events[-1]["seq"])} if events else {}
                try:
                    async with (
                        self.client(api) as client,
                        aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events", headers=headers) as source,
                    ):
                        if source.response.status_code != 200:
                            raise httpx.TransportError(f"status {source.response.status_code}")
                        async for sse in source.aiter_sse():
                            event = json.loads(sse.data)
                            events.append(event)
                            if on_event is not None:
                                on_event(event)
                            if event["type"] in TERMINAL:
                                return events
                except httpx.TransportError:
                    pass
                attempt += 1
                await asyncio.sleep(0.05)
        raise AssertionError(f"the stream of {task_id} did not end; saw {[e['type'] for e in events]}")

    # -- state -----------------------------------------------------------------------------

    async def record(self, task_id: str) -> TaskRecord:
        assert self.runtime is not None
        principal = await self.runtime.keys.authenticate(self.key)
        return await self.runtime.tasks.get(principal, task_id)

    async def log(self, task_id: str) -> list[Event]:
        assert self.runtime is not None
        return await self.runtime.log.read(task_id, 0, limit=100_000)

    async def wait_terminal(self, task_ids: list[str], within: float = 60.0) -> list[TaskRecord]:
        records: list[TaskRecord] = []
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(Exception):  # the database may be restarting
                    records = [await self.record(t) for t in task_ids]
                    if all(r.status.is_terminal for r in records):
                        return records
                await asyncio.sleep(0.2)

    def effects(self) -> list[str]:
        return self.side_effects.read_text().splitlines()


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    """Seqs 1, 2, 3 … without a gap or a repeat, ending with a terminal event."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert events[-1]["type"] in TERMINAL
