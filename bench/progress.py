"""Progress on stderr: one line per phase, stamped with the time since the run began."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - _START
