"""``fleet dev`` on a terminal prints its children's logs human-readable and colored,
each line prefixed by the child's name (elsewhere they are JSON lines: see
tests/e2e/test_readme_tour.py)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

from broker.settings import Settings
from fleet.harness import free_port

ANSI = "\x1b["


def read_until(fd: int, done: str, timeout: float) -> str:
    """What the terminal shows until ``done`` appears (or the deadline)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while done not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536).decode(errors="replace")
            except OSError:  # the other end closed
                break
    return seen


def test_on_a_terminal_the_logs_are_colored_and_prefixed(settings: Settings) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env = {**clean, "FLEET_NAMESPACE": settings.namespace, "PYTHONUNBUFFERED": "1"}
    port = free_port()
    terminal, child_side = pty.openpty()
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet",
            "dev",
            "--port",
            str(port),
            "--workers",
            "0",
            "--reapers",
            "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=child_side,
        stderr=child_side,
        env=env,
    )
    os.close(child_side)
    try:
        shown = read_until(terminal, "Ctrl-C stops every process", timeout=60)
        dev.send_signal(signal.SIGINT)
        assert dev.wait(30) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
        os.close(terminal)
    started = next(line for line in shown.splitlines() if "gateway_started" in line)
    assert started.startswith("gateway-0 | ")
    assert ANSI in started  # colored
    assert "{" not in started  # not JSON
