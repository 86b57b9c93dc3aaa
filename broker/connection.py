"""A robust AMQP connection that reconnects with capped exponential backoff."""

from __future__ import annotations

import time

import aio_pika
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection

from broker.backoff import Backoff

RECONNECT = Backoff(first=0.1, cap=2.0)


class BackoffConnection(RobustConnection):
    """aio-pika sleeps ``reconnect_interval`` between attempts (and reads it more than
    once per attempt); here it grows with the time spent disconnected so far."""

    _down_since: float | None = None

    @property
    def reconnect_interval(self) -> float:
        if self.connected.is_set():
            self._down_since = None
            return RECONNECT.first
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        return RECONNECT.after(now - self._down_since)

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        """Ignored: the interval is computed."""


async def connect(url: str, name: str, heartbeat: int | None = None) -> AbstractRobustConnection:
    """A robust connection; ``heartbeat`` (seconds) overrides the broker's default (60)."""
    return await aio_pika.connect_robust(
        url,
        connection_class=BackoffConnection,
        client_properties={"connection_name": name},
        heartbeat=heartbeat,
    )
