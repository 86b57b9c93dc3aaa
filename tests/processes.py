"""Real fleet processes for multi-process tests: start, watch their JSON logs, signal them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson

from broker.settings import Settings
from tests.support import http

LogLine = dict[str, Any]


class FleetProcess:
    """One ``fleet <command>`` subprocess whose log lines the test can wait for."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.lines: list[LogLine] = []
        self.raw: list[str] = []
        self._changed = asyncio.Condition()

    async def start(self) -> FleetProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            text = raw.decode(errors="replace").rstrip()
            self.raw.append(text)
            try:
                line = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    async def wait_for_log(
        self, event: str, match: Callable[[LogLine], bool] = lambda _: True, timeout: float = 20
    ) -> LogLine:
        """The first log line named ``event`` that ``match``es, waiting for it if need be."""

        def found() -> LogLine | None:
            return next((ln for ln in self.lines if ln.get("event") == event and match(ln)), None)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
            except TimeoutError:
                tail = "\n".join(self.raw[-30:])
                raise AssertionError(f"{self.name} never logged {event}:\n{tail}") from None
        line = found()
        assert line is not None
        return line

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def stop(self, timeout: float = 15) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader
        assert self.process.returncode is not None
        return self.process.returncode


class ProcessFleet:
    """Start gateways, workers and reapers as real ``fleet`` processes of one namespace."""

    def __init__(self, settings: Settings, **env: str) -> None:
        self.settings = settings
        self.processes: list[FleetProcess] = []
        self.env = {
            **os.environ,
            **settings.to_env(),
            "FLEET_LOG_FORMAT": "json",
            **env,
        }

    async def _spawn(self, name: str, args: list[str], **env: str) -> FleetProcess:
        process = await FleetProcess(name, args, {**self.env, **env}).start()
        self.processes.append(process)
        return process

    async def gateway(self, port: int, **env: str) -> FleetProcess:
        process = await self._spawn(f"gateway-{port}", ["gateway", "--port", str(port)], **env)
        await process.wait_for_log("gateway_started")
        async with http(f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/readyz")).status_code == 200
        return process

    async def worker(self, **env: str) -> tuple[FleetProcess, str]:
        """A started worker and its id."""
        process = await self._spawn(f"worker-{len(self.processes)}", ["worker"], **env)
        line = await process.wait_for_log("worker_started")
        return process, line["worker_id"]

    async def reaper(self, **env: str) -> FleetProcess:
        process = await self._spawn(f"reaper-{len(self.processes)}", ["reaper"], **env)
        await process.wait_for_log("reaper_started")
        return process

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


@asynccontextmanager
async def process_fleet(settings: Settings, **env: str) -> AsyncIterator[ProcessFleet]:
    fleet = ProcessFleet(settings, **env)
    try:
        yield fleet
    finally:
        await fleet.close()
