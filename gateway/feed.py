"""Live events for this gateway's clients, gap-free and duplicate-free.

The gateway has one exclusive queue on the outbound exchange, bound to a
conversation while at least one local client is in it. Each client has its own
cursor and delivery task: it joins the live stream first, then replays the log
after its ``latest_event_id``, then takes live events, skipping ids it already
sent and filling any gap from the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from broker.amqp import Broker
from broker.store import Store

log = structlog.get_logger()

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(eq=False)
class _Client:
    sid: str
    cursor: int
    # Live events; None asks for a catch-up from the log (after a broker reconnect).
    inbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Topic:
    clients: dict[str, _Client]
    bound: asyncio.Task[Any]


class Feed:
    """Subscribes to conversations on the first local join, unsubscribes on the last leave."""

    def __init__(self, broker: Broker, store: Store, emit: Emit) -> None:
        self._broker = broker
        self._store = store
        self._emit = emit
        self._topics: dict[str, _Topic] = {}
        self._clients: dict[str, tuple[str, _Client]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.received = 0  # live events taken from the broker

    async def start(self) -> None:
        channel = self._broker.fast
        self._queue: AbstractQueue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_message, no_ack=True)
        # Events published while we were disconnected never reach our queue.
        self._broker.connection.reconnect_callbacks.add(self._on_reconnect)

    def _on_reconnect(self, *_: object) -> None:
        log.info("feed_reconnected", clients=len(self._clients))
        for _cid, client in self._clients.values():
            client.inbox.put_nowait(None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def join(self, sid: str, cid: str, after: int) -> None:
        """Start delivering ``cid``'s events after id ``after`` to ``sid``."""
        topic = self._topics.get(cid)
        if topic is None:
            bind = self._queue.bind(self._broker.outbound, routing_key=cid)
            topic = self._topics[cid] = _Topic({}, self._spawn(bind))
        client = _Client(sid, after)
        topic.clients[sid] = client
        self._clients[sid] = (cid, client)
        try:
            await asyncio.shield(topic.bound)
        except BaseException:
            await self.leave(sid)
            raise
        client.task = self._spawn(self._deliver(cid, client))

    async def leave(self, sid: str) -> None:
        entry = self._clients.pop(sid, None)
        if entry is None:
            return
        cid, client = entry
        if client.task is not None:
            client.task.cancel()
        topic = self._topics.get(cid)
        if topic is None:
            return
        topic.clients.pop(sid, None)
        if not topic.clients:
            del self._topics[cid]
            try:
                await self._queue.unbind(self._broker.outbound, routing_key=cid)
            except Exception as exc:  # the binding dies with the queue anyway
                log.warning("unbind_failed", conversation_id=cid, error=repr(exc))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            events = orjson.loads(message.body)  # one batch, of one conversation
            topic = self._topics.get(events[0]["conversation_id"])
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("live_event_malformed", size=len(message.body))
            return
        self.received += len(events)
        if topic is not None:
            for client in topic.clients.values():
                for event in events:
                    client.inbox.put_nowait(event)

    async def _deliver(self, cid: str, client: _Client) -> None:
        """Replay from the log, then live events in id order: no gap, no duplicate.

        A failure (Redis unreachable, say) must not silence the client for good: after
        a capped backoff, delivery resumes with a catch-up from the client's cursor.
        """
        delay = 0.05
        event: dict[str, Any] | None = None  # None: catch up from the log
        while True:
            try:
                if event is None:
                    await self._catch_up(cid, client, upto=None)
                elif event["id"] > client.cursor:
                    if event["id"] > client.cursor + 1:
                        await self._catch_up(cid, client, upto=event["id"] - 1)
                    await self._send(client, event)
                delay = 0.05
                event = await client.inbox.get()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("delivery_retry", conversation_id=cid, sid=client.sid, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                event = None

    async def _catch_up(self, cid: str, client: _Client, upto: int | None) -> None:
        limit = None if upto is None else upto - client.cursor
        for raw in await self._store.read(cid, client.cursor, limit):
            await self._send(client, orjson.loads(raw))

    async def _send(self, client: _Client, event: dict[str, Any]) -> None:
        await self._emit(client.sid, event)
        client.cursor = event["id"]
