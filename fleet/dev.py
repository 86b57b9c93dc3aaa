"""``fleet dev``: a whole local fleet in one terminal, with prefixed logs.

A child that dies (a crash, or ``kill -9`` in the README's failover demo) is started
again, and ``fleet dev`` says so; only Ctrl-C or SIGTERM stop the fleet. A child
that exits because its configuration is bad stops the fleet: restarting cannot help.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from broker import tokens
from broker.backoff import Backoff
from broker.settings import Settings
from fleet.harness import http_ready

READY_TIMEOUT = 30.0
BAD_CONFIG = 2  # the exit code of a process whose configuration is bad (fleet.cli)
# A child that ran at least this long before dying is restarted at once again.
HEALTHY_RUN = 10.0
# Workers and reapers serve their metrics on the first free ports from this one,
# unless FLEET_METRICS_PORT (or --metrics-port) says otherwise.
METRICS_PORT = 9400


@dataclass
class Child:
    """One process of the fleet, restarted under the same name when it dies."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the fleet's
    metrics: str | None = None  # where its metrics are served
    metrics_port: int | None = None  # its own (workers and reapers), in ``env``
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


class DevFleet:
    """Starts the children, echoes their output, restarts the dead, stops on a signal."""

    def __init__(self, settings: Settings, plan: list[Child], env: dict[str, str]) -> None:
        self.settings = settings
        self.children = plan
        self.env = env
        self.width = max(len(child.name) for child in plan)
        self.stop = asyncio.Event()
        self.failed: str | None = None  # why the fleet stopped on its own

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for child in self.children:
                tasks.create_task(self._supervise(child))
            await self.stop.wait()
            say("stopping every process ...")
            self._signal_all(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited(), self.settings.shutdown_grace + 5)
            except TimeoutError:
                self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                child.process.send_signal(sig)

    async def _exited(self) -> None:
        for child in self.children:
            if child.process is not None:
                await child.process.wait()

    async def _supervise(self, child: Child) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        while not self.stop.is_set():
            started = time.monotonic()
            code = await self._run_once(child)
            if self.stop.is_set():
                return
            if code == BAD_CONFIG:
                self.failed = f"{child.name} exited with {code}: its configuration is bad"
                self.stop.set()
                return
            if time.monotonic() - started >= HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            child.restarts += 1
            say(f"{child.name} exited with {code}; restarting it in {delay:.1f} s")
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
            except TimeoutError:
                self._keep_metrics_port_free(child)

    def _keep_metrics_port_free(self, child: Child) -> None:
        """A child restarted after its metrics port was taken (by anything, meanwhile)
        moves to the next free one: on the old one it would exit as misconfigured."""
        port = child.metrics_port
        if port is None or is_free(self.settings.host, port):
            return
        ours = {other.metrics_port for other in self.children}
        moved = next(p for p in free_ports(self.settings.host, port + 1) if p not in ours)
        child.metrics_port = moved
        child.env["FLEET_METRICS_PORT"] = str(moved)
        child.metrics = f"http://{self.settings.host}:{moved}/metrics"
        say(f"{child.name}'s metrics port {port} is taken now; it moves to {child.metrics}")

    async def _run_once(self, child: Child) -> int:
        child.process = process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet",
            *child.args,
            env={**self.env, **child.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        if self.stop.is_set():  # started just as the fleet began to stop
            process.send_signal(signal.SIGTERM)
        elif child.restarts:
            say(f"{child.name} restarted (pid {process.pid})")
        assert process.stdout is not None
        async for line in process.stdout:
            sys.stdout.write(f"{child.name:<{self.width}} | {line.decode(errors='replace')}")
            sys.stdout.flush()
        return await process.wait()


def say(message: str) -> None:
    print(f"fleet dev: {message}", flush=True)


@dataclass(frozen=True, slots=True)
class Plan:
    """How many of each process, the first gateway's port, and which LLM (if any)."""

    gateways: int = 1
    workers: int = 2
    reapers: int = 1
    port: int | None = None
    llm: str | None = None  # "fake": the fake LLM, and the LLM agent talking to it
    metrics_port: int | None = None  # workers' and reapers' take the free ports from it


def run_dev(settings: Settings, plan: Plan) -> int:
    return asyncio.run(_dev(settings, plan, plan.port or settings.port))


async def _dev(settings: Settings, plan: Plan, port: int) -> int:
    secret = (
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else secrets.token_urlsafe(32)
    )
    env = {**os.environ, **settings.to_env(), "FLEET_JWT_SECRET": secret}
    if settings.log_format == "auto" and sys.stdout.isatty():
        env["FLEET_LOG_FORMAT"] = "console"  # the children write to our pipe, not a terminal
    host = settings.host
    children = [
        Child(
            f"gateway-{i}",
            ["gateway", "--port", str(port + i)],
            metrics=f"http://{host}:{port + i}/metrics",
        )
        for i in range(plan.gateways)
    ]
    # One metrics port each: the same port for all would fail all but one.
    roles = [("worker", i) for i in range(plan.workers)] + [
        ("reaper", i) for i in range(plan.reapers)
    ]
    first = plan.metrics_port or settings.metrics_port or METRICS_PORT
    ports = islice(free_ports(host, first), len(roles))
    for (role, i), metrics in zip(roles, ports, strict=True):
        children.append(
            Child(
                f"{role}-{i}",
                [role],
                env={"FLEET_METRICS_PORT": str(metrics)},
                metrics=f"http://{host}:{metrics}/metrics",
                metrics_port=metrics,
            )
        )
    if plan.llm == "fake":
        children.append(Child("fake-llm", ["fake-llm"]))
        env |= {
            "FLEET_AGENT": "workers.agents.llm:LLMAgent",
            "FLEET_LLM_BASE_URL": f"http://{settings.host}:{settings.fake_llm_port}/v1",
            "FLEET_LLM_MODEL": "fleet-fake",
        }
    fleet = DevFleet(settings, children, env)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stop.set)
    running = asyncio.create_task(fleet.run())
    if await _wait_ready(settings.host, port, plan.gateways, fleet.stop):
        _banner(settings, secret, port, plan.gateways, children)
    await running
    if fleet.failed:
        print(f"fleet dev: {fleet.failed}", file=sys.stderr)
        return 1
    return 0


def free_ports(host: str, first: int) -> Iterator[int]:
    """The ports from ``first`` up that are free on ``host`` now. A port taken is
    skipped: a child that cannot bind its port exits as misconfigured, which stops the
    whole fleet, and a port in the ephemeral range may be held by any outgoing
    connection."""
    return (port for port in range(first, 65536) if is_free(host, port))


def is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port`` now (as the metrics server does, with
    SO_REUSEADDR: a port with only closed connections lingering is free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


async def _wait_ready(host: str, port: int, gateways: int, stop: asyncio.Event) -> bool:
    """Poll each gateway's /readyz until it answers 200 (or we are told to stop)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    for i in range(gateways):
        while not await http_ready(host, port + i):
            if stop.is_set() or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.2)
    return True


def _banner(
    settings: Settings, secret: str, port: int, gateways: int, children: list[Child]
) -> None:
    token = tokens.issue(secret, "dev")
    urls = ", ".join(f"http://{settings.host}:{port + i}" for i in range(gateways))
    metrics = "".join(
        f"    {child.name:<10} {child.metrics}\n" for child in children if child.metrics
    )
    print(
        "\n"
        f"  agent-fleet is up (namespace {settings.namespace!r}): {urls}\n"
        f"  token for user 'dev':  {token}\n"
        f"  fleet token needs:     export FLEET_JWT_SECRET={secret}\n"
        f"  metrics (Prometheus):\n{metrics}"
        "  Ctrl-C stops every process.\n",
        flush=True,
    )
