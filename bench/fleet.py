"""A local fleet of real ``python -m fleet`` processes in one namespace, and its cleanup.

Each process logs JSON lines to its own file (a pipe nobody drains would stall it);
readiness and per-conversation claim times are read back from those files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp
import orjson

from bench import procstat
from bench.cleanup import purge
from broker.names import Names

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
POLL = 0.05

LogLine = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_time(line: LogLine) -> float:
    """A log line's timestamp (structlog ISO, UTC) as epoch seconds."""
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


class FleetProcess:
    """One ``python -m fleet <command>`` process and the JSON lines it has logged."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self._lines: list[LogLine] = []
        self._offset = 0
        self._partial = b""

    async def start(self) -> FleetProcess:
        # The child keeps its own descriptor; ours closes once it has started.
        with self._open_log() as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fleet",
                *self.args,
                env=self.env,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        return self

    def _open_log(self) -> BinaryIO:
        return open(self.log_path, "wb")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def lines(self) -> list[LogLine]:
        """Every JSON line logged so far (read incrementally)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        self._offset += len(chunk)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        for raw in complete:
            try:
                self._lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue  # a library's plain-text warning
        return self._lines

    def events(self, event: str) -> list[LogLine]:
        return [line for line in self.lines() if line.get("event") == event]

    async def wait_for(self, event: str, timeout: float = READY_TIMEOUT) -> LogLine:
        """The first line named ``event``; fails with the log tail if it never comes."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.events(event)
                if found:
                    return found[0]
                if not self.running:
                    break
                await asyncio.sleep(POLL)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{self.name} exited ({self.process.returncode}) before {event}:\n{tail}"
        )

    def rss(self) -> int:
        return procstat.rss_bytes(self.pid)

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None

    async def kill(self) -> None:
        if self.running:
            self.process.kill()
        await self.process.wait()


class LocalFleet:
    """Gateways, workers and a reaper of one namespace; ``close`` kills them and purges it."""

    def __init__(
        self,
        namespace: str,
        redis_url: str,
        amqp_url: str,
        jwt_secret: str,
        workdir: Path,
        **env: str,
    ) -> None:
        self.namespace = namespace
        self.names = Names(namespace)
        self.redis_url = redis_url
        self.amqp_url = amqp_url
        self.workdir = workdir
        self.processes: list[FleetProcess] = []
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FLEET_NAMESPACE": namespace,
            "FLEET_REDIS_URL": redis_url,
            "FLEET_AMQP_URL": amqp_url,
            "FLEET_JWT_SECRET": jwt_secret,
            "FLEET_LOG_FORMAT": "json",
            "FLEET_LOG_LEVEL": "INFO",
            **env,
        }

    async def __aenter__(self) -> LocalFleet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn(self, kind: str, args: list[str], env: dict[str, str]) -> FleetProcess:
        name = f"{kind}-{len(self.processes)}"
        path = self.workdir / f"{self.namespace}-{name}.log"
        process = FleetProcess(name, args, {**self.env, **env}, path)
        self.processes.append(process)
        return process

    async def gateway(self, **env: str) -> tuple[FleetProcess, str]:
        """A started gateway and its base URL, once ``/readyz`` says so."""
        port = free_port()
        process = await self._spawn("gateway", ["gateway", "--port", str(port)], env).start()
        await process.wait_for("gateway_started")
        url = f"http://127.0.0.1:{port}"
        # gateway_started is logged at ASGI startup, before uvicorn listens.
        async with aiohttp.ClientSession() as http, asyncio.timeout(READY_TIMEOUT):
            while True:
                try:
                    async with http.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            return process, url
                except aiohttp.ClientConnectionError:
                    if not process.running:
                        raise
                await asyncio.sleep(POLL)

    async def worker(self, **env: str) -> tuple[FleetProcess, str]:
        """A started worker and its id."""
        process = await self._spawn("worker", ["worker"], env).start()
        line = await process.wait_for("worker_started")
        return process, str(line["worker_id"])

    async def reaper(self, **env: str) -> FleetProcess:
        process = await self._spawn("reaper", ["reaper"], env).start()
        await process.wait_for("reaper_started")
        return process

    def warnings(self) -> Counter[str]:
        """Warnings and errors logged so far, as ``"<kind> <event> <error>"`` -> count.

        Subtract an earlier snapshot to get one phase's.
        """
        found: Counter[str] = Counter()
        for process in self.processes:
            kind = process.name.rsplit("-", 1)[0]
            for line in process.lines():
                if line.get("level") in ("warning", "error", "critical"):
                    error = str(line.get("error", ""))[:60]
                    found[f"{kind} {line.get('event')} {error}".rstrip()] += 1
        return found

    async def close(self) -> None:
        """Kill every process (no drain: the namespace is deleted next), then purge it."""
        await asyncio.gather(*(p.kill() for p in self.processes))
        await purge(self.namespace, self.redis_url, self.amqp_url)
