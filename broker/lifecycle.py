"""What every long-running fleet process shares: a unique id, its dependencies, and
stopping on signals at any stage (connecting, serving, draining)."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from broker.amqp import Broker
from broker.archive import Archive
from broker.dependencies import Dependency, Unreachable
from broker.redis import Client, require_durable
from broker.settings import Settings

# Seconds a cancelled task has to end before it is cancelled again.
CANCEL_AGAIN_AFTER = 1.0


async def first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again those that
    go on: on Python 3.11 a cancellation that lands as an awaited operation completes
    can be swallowed (``asyncio.wait_for``), and the task runs on as if never asked."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)


log = structlog.get_logger()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def process_id() -> str:
    """Host, pid and a random suffix: unique even when a pid is reused."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Service:
    """Runs ``serve`` until SIGTERM or SIGINT (``run``), or until ``stop`` is called.

    The first signal begins a graceful stop; a second one cancels it. A dependency
    lost for good (``fail``) stops the process too, and ``run`` raises it, so that
    the process exits non-zero.
    """

    def __init__(self, settings: Settings) -> None:
        self._stop = asyncio.Event()
        self.started = asyncio.Event()  # set once it serves
        self.fatal: Unreachable | None = None
        self.redis_health = Dependency("Redis", settings.redis_url, settings.dependency_timeout)
        self.amqp_health = Dependency("RabbitMQ", settings.amqp_url, settings.dependency_timeout)
        self.postgres_health = Dependency(
            "PostgreSQL", settings.postgres_url or "", settings.dependency_timeout
        )
        self._main: asyncio.Task[None] | None = None
        self._forced = False  # signalled twice: the graceful stop was cut short
        self._own_process = False  # run as the process's main (``run``), not in a test's
        self._redis_durable = settings.redis_durable

    def run(self) -> None:
        """Serve until stopped, on uvloop where it is installed."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self.main(handle_signals=True))

    def serving(self) -> None:
        """It serves now. What the process built to get here (modules, clients,
        connections) lives as long as it does: frozen, the garbage collector stops
        scanning it, so a full collection takes a few milliseconds instead of 50-100."""
        if self._own_process:
            gc.freeze()
        self.started.set()

    def stop(self) -> None:
        """Begin a graceful stop."""
        self._stop.set()

    def fail(self, error: Unreachable) -> None:
        """Stop because a dependency is gone for good."""
        self.fatal = self.fatal or error
        self.stop()

    def _signalled(self) -> None:
        if self._stop.is_set() and self._main is not None:
            self._forced = True
            self._main.cancel()  # asked twice: stop now, skipping what is left
        self.stop()

    async def main(self, handle_signals: bool = False) -> None:
        if handle_signals:
            self._own_process = True
            self._main = asyncio.current_task()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled)
        try:
            await self.serve()
        except BaseException as exc:
            if not self._forced:
                raise
            # What was cut short may have failed too; the fleet recovers the rest.
            log.warning(
                "stopped_now", error=None if isinstance(exc, asyncio.CancelledError) else repr(exc)
            )
        if self.fatal is not None:
            raise self.fatal

    async def connect(self, redis: Client, broker: Broker, archive: Archive | None = None) -> bool:
        """Reach Redis, then RabbitMQ, then PostgreSQL if there is an ``archive`` (its
        schema brought up to date), retrying with backoff; False when stopped first,
        ``Unreachable`` when one stays down for ``dependency_timeout``."""
        if not await self.redis_health.reach(redis.ping, self._stop):
            return False
        if self._redis_durable:
            await require_durable(redis)
        if not await self.amqp_health.reach(broker.connect, self._stop):
            return False
        return archive is None or await self.postgres_health.reach(archive.open, self._stop)

    def watch(self, broker: Broker, redis_error: Exception | None = None) -> bool:
        """Count a periodic loop's round: its Redis call failed with ``redis_error`` (or
        succeeded), and the AMQP connection is up or not (it reconnects by itself).
        False, and stopping, once either is gone for good."""
        try:
            if redis_error is None:
                self.redis_health.succeeded()
            else:
                self.redis_health.failed(redis_error)
            if broker.is_open:
                self.amqp_health.succeeded()
            else:
                self.amqp_health.failed(ConnectionError("connection lost; reconnecting"))
        except Unreachable as exc:
            self.fail(exc)
            return False
        return True

    async def serve(self) -> None:
        raise NotImplementedError
