"""``fleet dev`` on a terminal prints its children's logs human-readable and colored,
each line prefixed by the child's name (elsewhere they are JSON lines: see
tests/e2e/test_readme_tour.py); a metrics port that is taken is skipped, at
the start and when a child is restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from broker.settings import Settings
from fleet.harness import FleetProcess, free_port

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


async def test_a_metrics_port_taken_is_skipped_not_fatal(settings: Settings) -> None:
    """A port held by anything (in the ephemeral range, any outgoing connection) made
    its worker exit as misconfigured, and fleet dev stop every process with it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env = {**clean, "FLEET_NAMESPACE": settings.namespace, "PYTHONUNBUFFERED": "1"}
    with socket.socket() as held:
        while True:  # a free port whose successor is free too: hold the successor
            first = free_port()
            with contextlib.suppress(OSError):
                held.bind(("127.0.0.1", first + 1))
                break
        held.listen()
        args = ["dev", "--port", str(free_port()), "--workers", "2", "--reapers", "0"]
        dev = FleetProcess("fleet-dev", [*args, "--metrics-port", str(first)], env)
        await dev.start()
        try:
            async with asyncio.timeout(60):
                while sum("worker_started" in line for line in dev.raw) < 2 or not any(
                    "Ctrl-C stops every process" in line for line in dev.raw
                ):
                    assert dev.running, "\n".join(dev.raw)
                    await asyncio.sleep(0.05)
            shown = "\n".join(dev.raw)
            ports = [int(p) for p in re.findall(r"worker-\d +http://127.0.0.1:(\d+)/", shown)]
            assert ports[0] == first and ports[1] > first + 1
            async with httpx.AsyncClient() as client:
                for port in ports:
                    answer = await client.get(f"http://127.0.0.1:{port}/metrics")
                    assert answer.status_code == 200
        finally:
            await dev.stop()


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as raw:
        return raw.read().decode().split("\0")


async def test_a_restarted_child_whose_metrics_port_was_taken_moves_to_a_free_one(
    settings: Settings,
) -> None:
    """fleet dev restarts a worker killed with SIGKILL. Its port, taken meanwhile, made
    the restarted worker exit as misconfigured, and fleet dev stop every process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env = {**clean, "FLEET_NAMESPACE": settings.namespace, "PYTHONUNBUFFERED": "1"}
    first = free_port()
    args = ["dev", "--port", str(free_port()), "--workers", "1", "--reapers", "0"]
    dev = FleetProcess("fleet-dev", [*args, "--metrics-port", str(first)], env)
    await dev.start()

    async def until(seen: Callable[[], bool]) -> None:
        async with asyncio.timeout(60):
            while not seen():
                assert dev.running, "\n".join(dev.raw)
                await asyncio.sleep(0.05)

    def started() -> int:
        return sum("worker_started" in line for line in dev.raw)

    try:
        await until(lambda: started() == 1 and "Ctrl-C stops every process" in "\n".join(dev.raw))
        worker = next(p for p in children_of(dev.process.pid) if "worker" in cmdline(p))
        os.kill(worker, signal.SIGKILL)
        with socket.socket() as held:
            async with asyncio.timeout(5):
                while True:  # free as soon as the worker is gone
                    try:
                        held.bind(("127.0.0.1", first))
                        break
                    except OSError:
                        await asyncio.sleep(0.01)
            held.listen()
            assert not any("restarted" in line for line in dev.raw), "held too late"
            await until(lambda: started() == 2)
            moved = re.search(r"it moves to http://127.0.0.1:(\d+)/metrics", "\n".join(dev.raw))
            assert moved is not None, "\n".join(dev.raw)
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{moved[1]}/metrics")
            assert answer.status_code == 200
            assert dev.running
    finally:
        await dev.stop()
