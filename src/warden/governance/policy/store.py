"""The current policy engine, rebuilt when its policy files change. An invalid change is logged
and ignored: the previous engine keeps deciding, so a typo neither opens nor closes everything."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from warden.governance.decision import Decision
from warden.governance.policy.cedar import CedarPolicies
from warden.governance.policy.config import PolicyConfig, Rule
from warden.governance.policy.engine import PolicyEngine, PolicyRequest
from warden.governance.policy.errors import PolicyError
from warden.governance.policy.files import check_unique_names, load_policy_files
from warden.governance.policy.ratelimit import SlidingWindowLimiter

logger = logging.getLogger(__name__)

_Stamp = tuple[tuple[str, int, int] | None, ...]


@dataclass(frozen=True)
class _Snapshot:
    stamp: _Stamp
    """(path, mtime_ns, size) of every watched file: a cheap test for "maybe changed"."""
    digest: str
    """sha256 over the contents: the real test."""


class PolicyStore:
    """Holds the engine built from a `PolicyConfig` and its files; `reload` swaps in a new one."""

    def __init__(
        self,
        config: PolicyConfig,
        *,
        limiter: SlidingWindowLimiter | None = None,
        extra_rules: Sequence[Rule] = (),
    ):
        """Builds the first engine; raises `PolicyError` (every problem, with lines) when invalid.
        ``extra_rules`` come after the operator's (Warden's own rules for its contained tools)."""
        self.config = config
        self.extra_rules = tuple(extra_rules)
        self.limiter = limiter or SlidingWindowLimiter()
        self.last_error: str | None = None
        """Why the latest change was rejected; None once the files are valid again."""
        self._snapshot = self._take_snapshot()
        self._rejected: str | None = None
        self._engine = self._build()

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    def decide(self, request: PolicyRequest) -> Decision:
        return self._engine.decide(request)

    def watched_files(self) -> list[Path]:
        paths = list(self.config.files)
        if (cedar := self.config.cedar) is not None:
            paths += [p for p in (cedar.policies, cedar.schema_file, cedar.entities) if p is not None]
        return paths

    def reload(self) -> bool:
        """Rebuild the engine if a watched file changed; True when a new engine is in place. On an
        invalid change the old engine stays, the error is logged once and kept in `last_error`."""
        stamp = self._stamp()
        if stamp == self._snapshot.stamp:
            return False
        snapshot = self._take_snapshot(stamp)
        if snapshot.digest == self._snapshot.digest:
            self._snapshot = snapshot
            return False
        if snapshot.digest == self._rejected:
            return False
        try:
            engine = self._build()
        except PolicyError as exc:
            self._rejected = snapshot.digest
            self.last_error = exc.message
            logger.error("policy files changed but are invalid; the previous policy stays in force:\n%s", exc)
            return False
        self._engine = engine
        self._snapshot = snapshot
        self._rejected = None
        self.last_error = None
        logger.info("policy reloaded from %s", ", ".join(str(p) for p in self.watched_files()))
        return True

    async def watch(self, interval: float | None = None) -> None:
        """Check for changes every ``interval`` seconds (``config.reload_interval``) until cancelled;
        file reads run in a thread. Start it in the owner's task group."""
        every = interval if interval is not None else self.config.reload_interval
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # a watcher that dies silently would freeze the policy: keep going
                logger.exception("policy reload failed")

    def _build(self) -> PolicyEngine:
        file_rules = load_policy_files(self.config.files)
        check_unique_names(self.config.rules, file_rules)
        cedar = CedarPolicies.load(self.config.cedar) if self.config.cedar is not None else None
        return PolicyEngine.from_config(
            self.config, [*file_rules, *self.extra_rules], cedar=cedar, limiter=self.limiter
        )

    def _stamp(self) -> _Stamp:
        stamps: list[tuple[str, int, int] | None] = []
        for path in self.watched_files():
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((str(path), info.st_mtime_ns, info.st_size))
        return tuple(stamps)

    def _take_snapshot(self, stamp: _Stamp | None = None) -> _Snapshot:
        digest = hashlib.sha256()
        for path in self.watched_files():
            try:
                content = path.read_bytes()
            except OSError as exc:
                content = f"unreadable: {exc}".encode()
            digest.update(str(path).encode() + b"\0" + hashlib.sha256(content).digest())
        return _Snapshot(stamp if stamp is not None else self._stamp(), digest.hexdigest())
