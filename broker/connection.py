"""A robust AMQP connection to one node of a RabbitMQ cluster at a time: it reconnects
with capped exponential backoff, each attempt to the next node in turn.

``FLEET_AMQP_URL`` names one node, or several separated by commas (the nodes of one
cluster). A process connects to a node picked at random (so that a fleet's processes
spread over the cluster), trying the others in turn if it does not answer; when its
connection is lost it reconnects to the next node, and the next, until one answers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

import aiormq
import structlog
from aio_pika import RobustConnection
from aio_pika.connection import make_url
from yarl import URL

from broker.backoff import Backoff
from broker.coalesce import CoalescedTransports
from broker.dependencies import redact
from broker.settings import node_urls

# aiormq drops the CloseOk it owes for a channel the broker closed when its write queue
# is full (10 frames by default); reopening that channel then kills the whole connection
# ("second 'channel.open' seen"). Publishes that do not wait for their frames to be
# written (``broker.amqp.publish``) fill it often: a deep queue keeps room, and the
# socket's own back-pressure (``CoalescedTransports.drained``) bounds what waits there.
aiormq.Connection.FRAME_BUFFER_SIZE = 4096

RECONNECT = Backoff(first=0.1, cap=2.0)
# One attempt at one node; a node that does not even answer (a partitioned host)
# must not hold up the move to the next one for the operating system's minutes.
CONNECT_TIMEOUT = 10.0

log = structlog.get_logger()


class NodesConnection(RobustConnection):
    """A robust connection over the nodes of a cluster: each attempt to connect (the
    first one aside) goes to the node after the previous attempt's.

    aio-pika sleeps ``reconnect_interval`` between attempts (and reads it more than
    once per attempt); here it grows with the time spent disconnected so far.
    """

    _down_since: float | None = None

    def __init__(self, nodes: Sequence[URL], first: int = 0, **kwargs: Any) -> None:
        super().__init__(nodes[first], **kwargs)
        self.nodes = tuple(nodes)
        self._at = first
        self.transports = CoalescedTransports()
        self.kwargs["transport_factory"] = self.transports

    @property
    def node(self) -> str:
        """The node this connection is (or is trying to get) connected to, password hidden."""
        return redact(str(self.url.with_query(None)))

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

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # aio-pika calls this once per connection, when it ends, and once per failed
        # attempt at one: the next attempt goes to the next node.
        self._at = (self._at + 1) % len(self.nodes)
        self.url = self.nodes[self._at]
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if len(self.nodes) > 1:
            name = self.kwargs.get("client_properties", {}).get("connection_name")
            log.info("amqp_connected", node=self.node, connection=name)


async def connect(url: str, name: str, heartbeat: int | None = None) -> NodesConnection:
    """A robust connection to one of the nodes ``url`` lists, trying each once, from a
    random one; raises the last node's error when none answers. ``heartbeat``
    (seconds) overrides the broker's default (60)."""
    properties: dict[str, Any] = {"connection_name": name}
    nodes = [
        make_url(node, client_properties=properties, heartbeat=heartbeat) for node in node_urls(url)
    ]
    start = random.randrange(len(nodes))
    error: BaseException | None = None
    for i in range(len(nodes)):
        connection = NodesConnection(nodes, (start + i) % len(nodes), client_properties=properties)
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            await connection.close()
            error = exc
            continue
        return connection
    assert error is not None
    raise error
