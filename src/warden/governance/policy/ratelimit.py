"""Per-tool rate limits: sliding windows of call times, counted in this process only (N worker
processes allow up to N times the limit). Kept across policy reloads."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class SlidingWindowLimiter:
    """Counts events per key over the last ``window`` seconds."""

    clock: Callable[[], float] = time.monotonic
    max_keys: int = 100_000
    """Beyond this many live keys, windows that have emptied are swept out."""
    _windows: dict[Hashable, deque[float]] = field(default_factory=dict, init=False, repr=False)
    _spans: dict[Hashable, float] = field(default_factory=dict, init=False, repr=False)

    def count(self, key: Hashable, window: float, now: float) -> int:
        """Events of ``key`` in the ``window`` seconds before ``now`` (older ones are dropped)."""
        times = self._windows.get(key)
        if times is None:
            return 0
        horizon = now - window
        while times and times[0] <= horizon:
            times.popleft()
        return len(times)

    def record(self, key: Hashable, window: float, now: float) -> None:
        times = self._windows.get(key)
        if times is None:
            if len(self._windows) >= self.max_keys:
                self._sweep(now)
            times = self._windows[key] = deque()
        self._spans[key] = window
        times.append(now)

    def retry_after(self, key: Hashable, window: float, now: float) -> float:
        """Seconds until the oldest counted event leaves the window."""
        times = self._windows.get(key)
        if not times:
            return 0.0
        return max(0.0, times[0] + window - now)

    def _sweep(self, now: float) -> None:
        for key in [k for k, t in self._windows.items() if not t or t[-1] <= now - self._spans[k]]:
            del self._windows[key], self._spans[key]
        if len(self._windows) >= self.max_keys:
            # Still full of live windows: forget those idle longest rather than grow without bound.
            by_age = sorted(self._windows, key=lambda k: self._windows[k][-1])
            for key in by_age[: len(by_age) // 10 + 1]:
                del self._windows[key], self._spans[key]
