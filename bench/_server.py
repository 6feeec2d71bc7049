"""A Warden server in its own process, for benchmarks whose clients must not share its CPU.

Runner (child):  ``python -m bench._server CONFIG.json PORT WORKERS`` opens the runtime from
the JSON form of a `WardenConfig`, creates an admin key, serves the API with ``WORKERS`` worker
loops beside it (as ``warden serve`` does, on uvloop when installed), prints one JSON line
``{"url", "key", "pid", "loop"}`` once it listens, and shuts down gracefully when its stdin
closes (or on SIGTERM).

Launcher (parent): ``async with ServerProcess(config) as server: server.url, server.key``.
With ``WARDEN_BENCH_SERVER_PROFILE=FILE`` in the environment the child writes a cProfile to FILE;
with ``WARDEN_BENCH_SERVER_GC_FREEZE=1`` it calls ``gc.freeze()`` once started (an experiment).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench._common import PROJECT_DIR, free_port
from warden.config import WardenConfig

# -- parent ---------------------------------------------------------------------------------


class ServerProcess:
    def __init__(self, config: WardenConfig, *, workers: int = 1, start_timeout: float = 60.0) -> None:
        self.config = config
        self.workers = workers
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = ""
        self.pid = 0
        self.loop = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="warden-bench-server-")
        self._stderr_path = Path(self._tmp.name) / "stderr.log"
        self.final_stats: dict[str, Any] = {}
        self.objects_at_start: int | None = None

    async def __aenter__(self) -> ServerProcess:
        config_path = Path(self._tmp.name) / "config.json"
        config_path.write_text(json.dumps(self.config.model_dump(mode="json")), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), env.get("PYTHONPATH")]))
        with self._stderr_path.open("wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench._server",
                str(config_path),
                str(self.port),
                str(self.workers),
                cwd=PROJECT_DIR,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), self.start_timeout)
            info = json.loads(line)
        except (TimeoutError, json.JSONDecodeError) as exc:
            await self._stop()
            raise RuntimeError(f"the server process did not start: {self.stderr_tail()}") from exc
        self.key = info["key"]
        self.loop = info["loop"]
        self.objects_at_start = info.get("objects_at_start")
        return self

    def stats(self) -> dict[str, Any]:
        """What the child recorded (garbage-collector pauses); read after it stopped."""
        path = Path(self._tmp.name) / "server-stats.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def stderr_tail(self, size: int = 3000) -> str:
        path = self._stderr_path
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            # Closing its stdin asks the child to shut down gracefully; SIGTERM, then SIGKILL,
            # only if it does not within 30 s.
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), 10)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stop()
            self.final_stats = self.stats()
        finally:
            self._tmp.cleanup()


# -- child ----------------------------------------------------------------------------------


async def _serve(config: WardenConfig, port: int, workers: int, loop_name: str) -> None:
    from warden.api.app import create_app
    from warden.api.server import server_for
    from warden.runtime import Runtime

    runtime = await Runtime.open(config)
    try:
        admin = await runtime.keys.create("default", name="bench admin", scopes=["admin"])
        app = create_app(config, workers=workers, runtime=runtime)
        server = server_for(app, host="127.0.0.1", port=port, timeout_graceful_shutdown=10, backlog=4096)
        serving = asyncio.create_task(server.serve())
        async with asyncio.timeout(30):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("the server stopped during start")
                await asyncio.sleep(0.01)
        info: dict[str, Any] = {"url": f"http://127.0.0.1:{port}", "key": admin.secret, "pid": os.getpid()}
        info["objects_at_start"] = len(gc.get_objects())
        if os.environ.get("WARDEN_BENCH_SERVER_GC_FREEZE"):
            # Experiment knob: move everything alive after start-up out of the collector's reach.
            gc.collect()
            gc.freeze()
        info["loop"] = loop_name
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

        async def stop_on_stdin_eof() -> None:
            await asyncio.to_thread(sys.stdin.buffer.read)
            server.should_exit = True

        watcher = asyncio.create_task(stop_on_stdin_eof())
        try:
            await serving
        finally:
            watcher.cancel()
    finally:
        await runtime.close()


class GcPauses:
    """Records the garbage collector's pauses (wall time per collection and generation)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []
        self.tracked_at_full_collections: list[int] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            if info["generation"] == 2:
                # How many objects a full collection walks (counted before its clock starts).
                self.tracked_at_full_collections.append(len(gc.get_objects()))
            self._started = time.perf_counter()
        else:
            self.pauses.append(
                (time.time(), int(info["generation"]), (time.perf_counter() - self._started) * 1000)
            )

    def to_dict(self) -> dict[str, Any]:
        by_gen: dict[str, Any] = {}
        for gen in (0, 1, 2):
            ms = [p for _, g, p in self.pauses if g == gen]
            by_gen[f"gen{gen}"] = {
                "count": len(ms),
                "total_ms": round(sum(ms), 1),
                "max_ms": round(max(ms, default=0), 1),
            }
        return {
            "by_generation": by_gen,
            "over_20ms": [(round(t, 3), g, round(p, 1)) for t, g, p in self.pauses if p > 20],
            "tracked_objects_at_full_collections": self.tracked_at_full_collections,
        }


def main() -> None:
    config_path, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    stats_path = Path(config_path).with_name("server-stats.json")
    try:
        _main(config_path, port, workers)
    finally:
        stats_path.write_text(json.dumps({"gc": gc_pauses.to_dict()}), encoding="utf-8")


def _main(config_path: str, port: int, workers: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = WardenConfig(**json.loads(Path(config_path).read_text(encoding="utf-8")))
    try:
        import uvloop

        runner, loop_name = uvloop.run, "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"
    profile = os.environ.get("WARDEN_BENCH_SERVER_PROFILE")
    if not profile:
        with contextlib.suppress(KeyboardInterrupt):
            runner(_serve(config, port, workers, loop_name))
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            runner(_serve(config, port, workers, loop_name))
    finally:
        prof.disable()
        prof.dump_stats(profile)


if __name__ == "__main__":
    main()
