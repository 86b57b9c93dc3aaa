"""``fleet dev``: a whole local fleet in one terminal, with prefixed logs."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from dataclasses import dataclass

from broker import tokens
from broker.settings import Settings
from fleet.harness import http_ready

READY_TIMEOUT = 30.0


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process


def run_dev(settings: Settings, gateways: int, workers: int, reapers: int, port: int | None) -> int:
    return asyncio.run(_dev(settings, gateways, workers, reapers, port or settings.port))


async def _dev(settings: Settings, gateways: int, workers: int, reapers: int, port: int) -> int:
    secret = (
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else secrets.token_urlsafe(32)
    )
    env = {**os.environ, **settings.to_env(), "FLEET_JWT_SECRET": secret}
    if sys.stdout.isatty():
        env.setdefault("FLEET_LOG_FORMAT", "console")
    plan = (
        [(f"gateway-{i}", ["gateway", "--port", str(port + i)]) for i in range(gateways)]
        + [(f"worker-{i}", ["worker"]) for i in range(workers)]
        + [(f"reaper-{i}", ["reaper"]) for i in range(reapers)]
    )
    children = [
        Child(
            name,
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleet",
                *args,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            ),
        )
        for name, args in plan
    ]
    width = max(len(c.name) for c in children)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with asyncio.TaskGroup() as tasks:
        pumps = [tasks.create_task(_pump(c, width)) for c in children]
        exits = [tasks.create_task(c.process.wait()) for c in children]
        if await _wait_ready(settings.host, port, gateways, stop):
            _banner(settings, secret, port, gateways)
        stopper = tasks.create_task(stop.wait())
        await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
        print("fleet dev: stopping every process ...", flush=True)
        for child in children:
            if child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        await asyncio.wait(exits, timeout=settings.shutdown_grace + 5)
        for child in children:
            if child.process.returncode is None:
                child.process.kill()
        await asyncio.gather(*exits, *pumps)
        stopper.cancel()
    failed = [c for c in children if c.process.returncode not in (0, -signal.SIGTERM)]
    for child in failed:
        print(f"fleet dev: {child.name} exited with {child.process.returncode}", file=sys.stderr)
    return 1 if failed and not stop.is_set() else 0


async def _pump(child: Child, width: int) -> None:
    assert child.process.stdout is not None
    async for line in child.process.stdout:
        sys.stdout.write(f"{child.name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def _wait_ready(host: str, port: int, gateways: int, stop: asyncio.Event) -> bool:
    """Poll each gateway's /readyz until it answers 200 (or we are told to stop)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    for i in range(gateways):
        while not await http_ready(host, port + i):
            if stop.is_set() or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)
    return True


def _banner(settings: Settings, secret: str, port: int, gateways: int) -> None:
    token = tokens.issue(secret, "dev")
    urls = ", ".join(f"http://{settings.host}:{port + i}" for i in range(gateways))
    print(
        "\n"
        f"  agent-fleet is up (namespace {settings.namespace!r}): {urls}\n"
        f"  token for user 'dev':  {token}\n"
        f"  fleet token needs:     export FLEET_JWT_SECRET={secret}\n"
        "  Ctrl-C stops every process.\n",
        flush=True,
    )
