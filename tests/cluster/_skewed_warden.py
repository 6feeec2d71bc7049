"""The `warden` command on a host whose clock is wrong: ``time.time()`` is offset by
``$WARDEN_TEST_CLOCK_OFFSET`` seconds before Warden is imported (monotonic clocks stay true)."""

from __future__ import annotations

import os
import sys
import time

_OFFSET = float(os.environ.get("WARDEN_TEST_CLOCK_OFFSET", "0"))
_real_time = time.time


def _skewed_time() -> float:
    return _real_time() + _OFFSET


time.time = _skewed_time

if __name__ == "__main__":
    from warden.cli import main

    sys.argv[0] = "warden"
    main()
