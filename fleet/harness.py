"""Throwaway local fleets of real ``python -m fleet`` processes, for tests and the bench.

Each process's output is read line by line as it comes (a pipe nobody drains would
stall it), kept as parsed JSON log lines the caller can wait for, and copied to a
log file when one is given. ``purge`` deletes everything a namespace left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from broker.amqp import Broker
from broker.names import Names
from broker.redis import connect
from broker.settings import Settings

LogLine = dict[str, Any]
READY_TIMEOUT = 30.0
POLL = 0.05
# <namespace>:conv:{<conversation id>}:meta, see broker.names
META = re.compile(r"^(?P<ns>[^:]+):\{[^}]*\}:conv:(?P<cid>[^:]+):meta$")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_time(line: LogLine) -> float:
    """A log line's timestamp (structlog ISO, UTC) as epoch seconds."""
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


async def http_ready(host: str, port: int) -> bool:
    """Whether a gateway answers ``GET /readyz`` with 200."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status = await reader.readline()
    except OSError:
        return False
    finally:
        writer.close()
    return b" 200 " in status


class FleetProcess:
    """One ``python -m fleet <args>`` process and the JSON lines it has logged."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_path: Path | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.lines: list[LogLine] = []  # every JSON line logged so far
        self.raw: list[str] = []  # every line, JSON or not
        self._changed = asyncio.Condition()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._terminated = False  # sent SIGTERM: a second one would cut its drain short

    async def start(self) -> FleetProcess:
        log = await asyncio.to_thread(self.log_path.open, "wb") if self.log_path else None
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet",
            *self.args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read(log))
        return self

    @property
    def process(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def rss(self) -> int:
        """Resident memory (VmRSS), in bytes."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise ValueError(f"no VmRSS for {self.name} (pid {self.pid})")

    async def _read(self, log: IO[bytes] | None) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                if log is not None:
                    log.write(raw)
                text = raw.decode(errors="replace").rstrip()
                try:
                    line = orjson.loads(text)
                except orjson.JSONDecodeError:
                    line = None  # a library's plain-text line
                async with self._changed:
                    self.raw.append(text)
                    if isinstance(line, dict):
                        self.lines.append(line)
                    self._changed.notify_all()
        finally:
            if log is not None:
                log.close()
            async with self._changed:
                self._changed.notify_all()  # waiters learn that it exited

    def events(self, event: str) -> list[LogLine]:
        return [line for line in self.lines if line.get("event") == event]

    async def wait_for(
        self,
        event: str,
        match: Callable[[LogLine], bool] = lambda _: True,
        timeout: float = READY_TIMEOUT,
    ) -> LogLine:
        """The first line named ``event`` that ``match``es, waiting for it if need be;
        fails with the log's tail if it never comes, or if the process exits first."""

        def found() -> LogLine | None:
            return next((ln for ln in self.lines if ln.get("event") == event and match(ln)), None)

        def over() -> bool:
            return found() is not None or (self._reader is not None and self._reader.done())

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(over), timeout)
            line = found()
        if line is None:
            tail = "\n".join(self.raw[-30:])
            state = "running" if self.running else f"exited ({self.returncode})"
            raise AssertionError(f"{self.name} ({state}) never logged {event}:\n{tail}")
        return line

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            self.process.send_signal(sig)
            self._terminated |= sig == signal.SIGTERM

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout``."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return None

    async def stop(self, timeout: float = 15) -> int:
        """SIGTERM (after SIGCONT, should it be paused); SIGKILL if it outlives ``timeout``."""
        if self.running:
            self.process.send_signal(signal.SIGCONT)
            if not self._terminated:
                self.signal(signal.SIGTERM)
            if await self.wait(timeout) is None:
                self.process.kill()
        return await self._exited()

    async def kill(self) -> int:
        if self.running:
            self.process.kill()
        return await self._exited()

    async def _exited(self) -> int:
        code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code


class LocalFleet:
    """Gateways, workers and reapers of one namespace, as real processes."""

    def __init__(self, settings: Settings, **env: str) -> None:
        self.settings = settings
        self.names = settings.names
        self.log_dir: Path | None = None  # set to keep each process's log in a file
        self.processes: list[FleetProcess] = []
        self.env = {
            **os.environ,
            **settings.to_env(),
            "PYTHONUNBUFFERED": "1",
            "FLEET_LOG_FORMAT": "json",
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

    async def _spawn(self, kind: str, args: list[str], env: dict[str, str]) -> FleetProcess:
        name = f"{kind}-{len(self.processes)}"
        log_path = self.log_dir / f"{self.settings.namespace}-{name}.log" if self.log_dir else None
        process = FleetProcess(name, args, {**self.env, **env}, log_path)
        self.processes.append(process)
        return await process.start()

    async def gateway(self, port: int | None = None, **env: str) -> tuple[FleetProcess, str]:
        """A gateway and its base URL, once it answers ``/readyz``."""
        port = port or free_port()
        process = await self._spawn("gateway", ["gateway", "--port", str(port)], env)
        host = self.settings.host
        async with asyncio.timeout(READY_TIMEOUT):
            while not await http_ready(host, port):
                if not process.running:
                    await process.wait_for("gateway_started", timeout=0)  # fails with the log
                await asyncio.sleep(POLL)
        return process, f"http://{host}:{port}"

    async def worker(self, **env: str) -> tuple[FleetProcess, str]:
        """A started worker and its id."""
        process = await self._spawn("worker", ["worker"], env)
        line = await process.wait_for("worker_started")
        return process, str(line["worker_id"])

    async def reaper(self, **env: str) -> FleetProcess:
        process = await self._spawn("reaper", ["reaper"], env)
        await process.wait_for("reaper_started")
        return process

    async def fake_llm(self, pace: float, port: int | None = None) -> tuple[FleetProcess, str]:
        """``fleet fake-llm`` (unscripted replies at ``pace`` words per second) and its
        base URL, up to ``/v1``, once it serves."""
        port = port or free_port()
        args = ["fake-llm", "--port", str(port), "--pace", str(pace)]
        process = await self._spawn("fake-llm", args, {})
        await process.wait_for("fake_llm_started")
        return process, f"http://{self.settings.host}:{port}/v1"

    def warnings(self) -> Counter[str]:
        """Warnings and errors logged so far, as ``"<kind> <event> <error>"`` -> count."""
        found: Counter[str] = Counter()
        for process in self.processes:
            kind = process.name.rsplit("-", 1)[0]
            for line in process.lines:
                if line.get("level") in ("warning", "error", "critical"):
                    error = str(line.get("error", ""))[:60]
                    found[f"{kind} {line.get('event')} {error}".rstrip()] += 1
        return found

    async def close(self, graceful: bool = True) -> None:
        """Stop every process: SIGTERM and wait (``graceful``), or SIGKILL."""
        await asyncio.gather(*(p.stop() if graceful else p.kill() for p in self.processes))


async def purge(
    prefix: str,
    redis_url: str,
    amqp_url: str,
    queues: Iterable[str] = (),
    exchanges: Iterable[str] = (),
    cluster: bool = False,
) -> int:
    """Delete every key, queue and exchange of the namespaces named ``prefix...``
    (a test's namespace, or all of a bench run's); how many queues were deleted.

    The fleet never scans; this may, to find everything a throwaway fleet left.
    Queue names come from the conversation records (and ``queues``, ``exchanges``
    from elsewhere), so keys go last.
    """
    redis = connect(redis_url, cluster)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        # The prefix as a namespace too: one that ran a fleet but stored no record.
        namespaces = {prefix}
        doomed = set(queues)
        for key in keys:
            if found := META.match(key.decode(errors="replace")):
                namespaces.add(found["ns"])
                doomed.add(Names(found["ns"]).conversation_queue(found["cid"]))
        for ns in namespaces:
            names = Names(ns)
            doomed |= {names.dispatch_queue, names.webhook_dead_letters, *names.webhook_queues}
        doomed_exchanges = {Names(ns).outbound_exchange for ns in namespaces} | set(exchanges)
        broker = Broker(amqp_url, Names(prefix), name="purge", channels=8)
        await broker.connect(declare=False)
        try:
            await broker.delete(sorted(doomed), sorted(doomed_exchanges))
        finally:
            await broker.close()
        for first in range(0, len(keys), 1000):
            await redis.unlink(*keys[first : first + 1000])
    finally:
        await redis.aclose()
    return len(doomed)
