"""Live events for this gateway's clients, gap-free and duplicate-free.

The gateway listens to the live events of the conversations it has clients in
(``Broker.bind_events`` on the first local join, ``unbind_events`` on the last
leave). Each client has its own
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

from broker.amqp import Broker
from broker.backoff import Backoff
from broker.events import Malformed, StreamFrame, decode_live
from broker.store import Store
from gateway.streams import StreamCursor

log = structlog.get_logger()

# (sid, Socket.IO event name, payload)
Emit = Callable[[str, str, dict[str, Any]], Awaitable[None]]
Live = dict[str, Any] | StreamFrame  # a logged event, or a frame of streamed text

# Live events held for one client beyond this are dropped for a catch-up from the log:
# a slow client costs the gateway a bounded amount of memory.
LIVE_BACKLOG = 1000
# The log is replayed this many events at a time.
REPLAY_PAGE = 200


class ClientGone(Exception):
    """The client was disconnected (too slow to read): stop delivering to it."""


@dataclass(eq=False)
class _Client:
    sid: str
    cursor: int
    # Live events and frames; None asks for a catch-up from the log (after a broker
    # reconnect, or when the client fell too far behind).
    inbox: asyncio.Queue[Live | None] = field(default_factory=lambda: asyncio.Queue(LIVE_BACKLOG))
    stream: StreamCursor = field(default_factory=StreamCursor)
    task: asyncio.Task[None] | None = None

    def hand(self, event: Live | None) -> None:
        """Queue a live event (None: a catch-up); past the backlog, catch up instead."""
        try:
            self.inbox.put_nowait(event)
        except asyncio.QueueFull:
            while not self.inbox.empty():
                self.inbox.get_nowait()
            self.inbox.put_nowait(None)


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
        await self._broker.listen_events(self._on_batch)
        # Events published while we were disconnected never reach us.
        self._broker.on_reconnect(self._on_reconnect)

    def _on_reconnect(self) -> None:
        log.info("feed_reconnected", clients=len(self._clients))
        for _cid, client in self._clients.values():
            client.hand(None)

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
            bind = self._broker.bind_events(cid)
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
                await self._broker.unbind_events(cid)
            except Exception as exc:  # the binding dies with the queue anyway
                log.warning("unbind_failed", conversation_id=cid, error=repr(exc))

    def _on_batch(self, body: bytes) -> None:
        try:
            live = decode_live(body)
        except Malformed as exc:
            log.warning("live_event_malformed", error=str(exc))
            return
        items: list[Live]
        if isinstance(live, StreamFrame):
            cid, items = live.conversation_id, [live]
        else:
            cid, events = live
            items = list(events)
            self.received += len(events)
        topic = self._topics.get(cid)
        if topic is not None:
            for client in topic.clients.values():
                for item in items:
                    client.hand(item)

    async def _deliver(self, cid: str, client: _Client) -> None:
        """Replay from the log, then live events in id order: no gap, no duplicate.

        A failure (Redis unreachable, say) must not silence the client for good: after
        a capped backoff, delivery resumes with a catch-up from the client's cursor.
        """
        backoff = Backoff()
        item: Live | None = None  # None: catch up from the log, then the streamed text
        while True:
            try:
                if item is None:
                    await self._catch_up(cid, client, upto=None)
                    await self._resync(cid, client)
                elif isinstance(item, StreamFrame):
                    await self._frame(cid, client, item)
                elif item["id"] > client.cursor:
                    if item["id"] > client.cursor + 1:
                        await self._catch_up(cid, client, upto=item["id"] - 1)
                    await self._send(client, item)
                backoff.reset()
                item = await client.inbox.get()
            except asyncio.CancelledError:
                raise
            except ClientGone:
                return
            except Exception as exc:
                log.warning("delivery_retry", conversation_id=cid, sid=client.sid, error=repr(exc))
                await backoff.sleep()
                item = None

    async def _catch_up(self, cid: str, client: _Client, upto: int | None) -> None:
        """Send the log after the client's cursor (up to ``upto``), a page at a time."""
        while upto is None or client.cursor < upto:
            page = REPLAY_PAGE if upto is None else min(REPLAY_PAGE, upto - client.cursor)
            entries = await self._store.read(cid, client.cursor, page)
            for raw in entries:
                await self._send(client, orjson.loads(raw))
            if len(entries) < page:
                return

    async def _send(self, client: _Client, event: dict[str, Any]) -> None:
        await self._emit(client.sid, "event", event)
        client.cursor = event["id"]
        client.stream.saw_event(event)

    async def _frame(self, cid: str, client: _Client, frame: StreamFrame) -> None:
        verdict = client.stream.verdict(frame)
        if verdict == "send":
            await self._send_frame(client, frame)
        elif verdict == "resync":
            await self._resync(cid, client)

    async def _resync(self, cid: str, client: _Client) -> None:
        """What the client misses of the step being streamed, from its snapshot."""
        frame = client.stream.catch_up(await self._store.streaming(cid))
        if frame is not None:
            await self._send_frame(client, frame)

    async def _send_frame(self, client: _Client, frame: StreamFrame) -> None:
        await self._emit(client.sid, "stream", frame.to_client())
        client.stream.sent(frame)
