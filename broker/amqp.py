"""The fleet's AMQP topology and the only door into it (aio-pika).

- ``<ns>.conv.<id>``: a conversation's durable queue of input (actions, the close
  marker), published through the default exchange (no binding to create or keep: a
  conversation costs one declare); persistent, ``mandatory`` and confirmed, so input
  is acknowledged only once it is safely queued, and a missing queue is an error.
- ``<ns>.out`` (topic): logged events for live delivery, routed by conversation id
  to the gateways that have clients of it. Not confirmed: the Redis log is the
  record, and gateways fill any gap from it.
- ``<ns>.dispatch``: durable work queue of claim requests for workers.
- Owner queries (a completion asked of a conversation's owner) go into the
  conversation's queue too, so they reach exactly its current owner and a passivated
  conversation is claimed by the usual path; they are transient and expire with their
  asker's patience, and their answers come back by direct reply-to
  (``amq.rabbitmq.reply-to``), straight to the asking gateway's connection.
- ``<ns>.webhooks.<shard>``: the webhook outbox, durable queues of deliveries owed to
  webhook receivers, a conversation's all in one shard (``Names.webhook_queue``), each
  with a single active consumer (per-conversation order); persistent and confirmed.
  ``<ns>.webhooks.dead``: the deliveries given up on, kept for an operator.

With ``queue_type`` quorum, the conversation, dispatch and webhook queues are quorum
queues: replicated over the cluster's nodes, they survive the loss of a minority of
them with what they hold. The type is fixed for a namespace: RabbitMQ refuses to
declare a queue again with another type (``QueueTypeMismatch``).

Every message body is encoded and decoded in ``broker.events``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    ConsumerTag,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)

from broker import connection, tracing
from broker.backoff import Backoff
from broker.errors import ConversationClosed, QueueGone, Unavailable
from broker.events import (
    Action,
    ClaimCause,
    ClaimRequest,
    CloseMarker,
    Query,
    QueueItem,
    StreamFrame,
    TimerFired,
    Webhook,
    encode_batch,
    encode_claim_request,
    encode_frame,
    encode_input,
    encode_webhook,
    input_id,
)
from broker.inbox import Delivery, Inbox
from broker.names import DIRECT_REPLY_TO, Names
from broker.settings import ConfigError, QueueType

Properties = aiormq.spec.Basic.Properties
PERSISTENT = 2  # AMQP's delivery modes
TRANSIENT = 1
TRANSIENT_PROPERTIES = Properties(delivery_mode=TRANSIENT)  # live events' and frames'
# aio-pika's words for a broker that did not take a message: refused, unconfirmed,
# timed out, or a channel/connection that is closed (RuntimeError).
NOT_TAKEN = (AMQPError, DeliveryError, TimeoutError, ConnectionError, RuntimeError)
# What a consumer sees while the connection is down: retry once it is restored.
INTERRUPTED = (AMQPError, ConnectionError)
SINGLE_ACTIVE_CONSUMER = {"x-single-active-consumer": True}

log = structlog.get_logger()


class QueueTypeMismatch(ConfigError):
    """The namespace's queues exist with another type than ``FLEET_QUEUE_TYPE``."""


class NotConnected(RuntimeError):
    """A broker verb was used before ``connect``."""


class Consumer:
    """A consumer of one queue; ``cancel`` stops it (what it holds unacked goes back)."""

    def __init__(self, queue: AbstractQueue, tag: ConsumerTag) -> None:
        self._queue = queue
        self._tag = tag

    async def cancel(self) -> None:
        await self._queue.cancel(self._tag)


# Whether ``item`` may declare again the queue of conversation ``cid`` (see ``Broker``).
Reopen = Callable[[str, QueueItem], Awaitable[bool]]


class Message(NamedTuple):
    """A message to publish: its body and its AMQP properties, built directly. An
    ``aio_pika.Message`` (which builds the same properties) took 14 µs a publish
    against 0.8 µs, most of it in its guarded ``__setattr__`` (3.8 % of a gateway's time
    under load, 2.6 % of a worker's)."""

    body: bytes
    properties: Properties


async def publish(
    channel: AbstractRobustChannel,
    message: Message,
    routing_key: str,
    exchange: str = "",
    mandatory: bool = False,
    timeout: float | None = None,
) -> None:
    """aio-pika's ``Exchange.publish``, without waiting for the frames to be written.

    aio-pika waits for that holding the channel's lock, so the publishes of one channel
    went out one per turn of the event loop, each in its own socket write, and the
    others queued behind it. Here the lock is held only while the frames are queued:
    those of many conversations leave together (``broker.coalesce``). A confirmed
    channel's publish still returns once the broker confirmed it (``DeliveryError``
    when it refused, ``PublishError`` when no queue took a mandatory one)."""
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    underlay = cast(aiormq.Channel, await channel.get_underlay_channel())  # it has ``wait``
    await underlay.basic_publish(
        message.body,
        exchange=exchange,
        routing_key=routing_key,
        properties=message.properties,
        mandatory=mandatory,
        timeout=timeout,
        wait=False,
    )


class Broker:
    """One robust AMQP connection with the fleet's topology, and every verb the fleet
    needs of it. ``connect`` first.

    ``channels`` is the pool a conversation's queue is declared and consumed on (one
    channel per conversation, picked by ``_channel_for``): the broker serves each
    channel's methods in order, so a burst of new conversations (or of claims, on a
    failover) proceeds in parallel over the pool. ``prefetch`` bounds the unacked
    input each pool channel holds. ``heartbeat`` (seconds) is how soon the broker
    gives up on a process that stopped answering and hands what it held to others.
    ``reopen`` says whether input for a conversation whose queue is gone may declare
    it again (a passivated conversation's queue is deleted; a closed one's is gone for
    good): without it, such input is refused as ``ConversationClosed``. A publish
    not confirmed within ``publish_timeout`` seconds is ``Unavailable``.
    ``queue_type`` is the type of the queues it declares (``FLEET_QUEUE_TYPE``).
    """

    def __init__(
        self,
        url: str,
        names: Names,
        name: str = "fleet",
        channels: int = 1,
        prefetch: int = 0,
        heartbeat: int | None = None,
        reopen: Reopen | None = None,
        publish_timeout: float = 10.0,
        queue_type: QueueType = "classic",
    ) -> None:
        self.url = url
        self.queue_type = queue_type
        self._reopen = reopen
        self._publish_timeout = publish_timeout
        self.names = names
        self.name = name
        self._pool_size = channels
        self._prefetch = prefetch
        self._heartbeat = heartbeat
        self._connection: connection.NodesConnection | None = None
        self._confirmed: AbstractRobustChannel | None = None
        # Live events and bindings go out without confirms: nothing waits for them.
        self._unconfirmed: AbstractRobustChannel | None = None
        self._pool: list[AbstractRobustChannel] = []
        self._dispatch: AbstractQueue | None = None
        self._outbound: AbstractExchange | None = None
        self._live: AbstractQueue | None = None
        # Owner queries go out on the channel that consumes their answers (direct
        # reply-to requires it); each waits under its correlation id.
        self._asking: AbstractRobustChannel | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        # How often each publishing channel was renewed (see ``_publish_confirmed_to``).
        self._renewals: dict[AbstractRobustChannel, int] = {}
        self._renewing = asyncio.Lock()

    # --- connection ---------------------------------------------------------------------
    async def connect(self, declare: bool = True) -> None:
        """Open the connection and its channels; declare the fleet's exchange and
        dispatch queue unless ``declare`` is False (read-only users write nothing)."""
        conn = await connection.connect(self.url, self.name, self._heartbeat)
        try:
            confirmed = await conn.channel(publisher_confirms=True, on_return_raises=True)
            unconfirmed = await conn.channel(publisher_confirms=False)
            pool = [await conn.channel(publisher_confirms=False) for _ in range(self._pool_size)]
            for channel in pool:
                if self._prefetch:
                    await channel.set_qos(prefetch_count=self._prefetch)
            if declare:
                self._outbound = await unconfirmed.declare_exchange(
                    self.names.outbound_exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                await self._declare_durable(confirmed, self.names.dispatch_queue)
        except BaseException:
            await conn.close()  # a retry opens a new one
            raise
        conn.reconnect_callbacks.add(self._reconnected)
        self._connection, self._confirmed, self._unconfirmed = conn, confirmed, unconfirmed
        self._pool = pool

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def ping(self) -> None:
        """A round trip to the broker (a channel opened and closed); raises when it
        does not answer. An open connection alone proves nothing: a partitioned one
        stays open until its heartbeat lapses."""
        async with self._conn().channel(publisher_confirms=False):
            pass

    @property
    def is_open(self) -> bool:
        """Connected now (a robust connection that is reconnecting is not)."""
        return self._connection is not None and self._connection.connected.is_set()

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the connection and its channels are restored."""
        self._reconnect_callbacks.append(callback)

    def _reconnected(self, *_: object) -> None:
        for callback in self._reconnect_callbacks:
            callback()

    def _conn(self) -> connection.NodesConnection:
        if self._connection is None:
            raise NotConnected(f"{self.name}: the broker is not connected")
        return self._connection

    def _channel(self, channel: AbstractRobustChannel | None) -> AbstractRobustChannel:
        if channel is None:
            raise NotConnected(f"{self.name}: the broker is not connected")
        return channel

    def _channel_for(self, cid: str) -> AbstractRobustChannel:
        """The pool channel a conversation's queue is declared and consumed on."""
        if not self._pool:
            raise NotConnected(f"{self.name}: the broker is not connected")
        return self._pool[hash(cid) % len(self._pool)]

    # --- conversation queues --------------------------------------------------------
    async def _declare(self, cid: str) -> AbstractQueue:
        # Not ``robust``: a robust channel would remember every queue it ever declared
        # and redeclare them all on reconnect; the worker redeclares what it still runs.
        # Single active consumer: a new owner gets nothing until the old owner's
        # consumer is gone and what it held went back, in order, to the queue.
        return await self._declare_durable(
            self._channel_for(cid),
            self.names.conversation_queue(cid),
            robust=False,
            single_consumer=True,
        )

    def _arguments(self, single_consumer: bool) -> dict[str, Any]:
        # A classic queue is declared with no x-queue-type, as it always was: queues of
        # namespaces made before the setting existed are declared again unchanged.
        arguments: dict[str, Any] = dict(SINGLE_ACTIVE_CONSUMER) if single_consumer else {}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return arguments

    async def _declare_durable(
        self,
        channel: AbstractRobustChannel,
        name: str,
        robust: bool = True,
        single_consumer: bool = False,
    ) -> AbstractQueue:
        """Declare one of the fleet's durable queues with the namespace's queue type."""
        try:
            return await channel.declare_queue(
                name, durable=True, robust=robust, arguments=self._arguments(single_consumer)
            )
        except ChannelPreconditionFailed as exc:
            if "x-queue-type" not in str(exc):
                raise
            raise QueueTypeMismatch(
                f"queue {name} exists with another type than FLEET_QUEUE_TYPE="
                f"{self.queue_type} ({exc}): a fleet's queue type is fixed for its "
                "namespace; use the type its queues were made with, or a new FLEET_NAMESPACE"
            ) from None

    async def declare_conversation(self, cid: str) -> int:
        """Make sure the conversation's queue exists; how many messages wait in it."""
        queue = await self._declare(cid)
        result = queue.declaration_result
        return int(result.message_count or 0) if result is not None else 0

    async def inbox(self, cid: str) -> Inbox:
        """Consume the conversation's queue (declaring it if need be), in order."""
        inbox = Inbox()
        await inbox.consume(await self._declare(cid))
        return inbox

    async def queue_depth(self, cid: str) -> int | None:
        """Messages waiting in the conversation's queue; None when it has none.
        Passive: declares nothing."""
        return await self.passive_depth(self.names.conversation_queue(cid))

    async def publish_input(self, cid: str, item: Action | CloseMarker | TimerFired) -> None:
        """Queue input for the conversation; return only once the broker confirmed it."""
        properties = Properties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=input_id(cid, item),
            headers=tracing.inject() or None,  # the action's trace goes on in the worker
        )
        message = Message(encode_input(item, sent_at=time.time()), properties)
        await self._queue(self._channel(self._confirmed), cid, message, item)

    async def _queue(
        self, channel: AbstractRobustChannel, cid: str, message: Message, item: QueueItem
    ) -> None:
        """Publish into the conversation's queue, declaring it again if it was deleted
        on passivation (and ``reopen`` agrees); return once the broker confirmed it."""
        try:
            await self._publish_queued(channel, cid, message, item)
        except QueueGone:
            if self._reopen is None or not await self._reopen(cid, item):
                raise
            await self._declare(cid)
            await self._publish_queued(channel, cid, message, item)  # gone again: closed

    async def _publish_queued(
        self, channel: AbstractRobustChannel, cid: str, message: Message, item: QueueItem
    ) -> None:
        try:
            await self._publish_confirmed_to(channel, message, self.names.conversation_queue(cid))
        except PublishError as exc:
            raise QueueGone(f"conversation {cid} takes no more input") from exc
        except NOT_TAKEN as exc:
            what = "query" if isinstance(item, Query) else "input"
            raise Unavailable(f"the message broker did not confirm the {what}") from exc

    # --- owner queries (request/reply) ------------------------------------------------
    async def listen_answers(self) -> None:
        """Receive the answers to this process's queries (``ask`` needs it first)."""
        # Confirmed, so that a query whose conversation has no queue any more (closed)
        # is returned and fails at once. The confirm costs the asker no time: the owner
        # is at work on the query while it comes back.
        channel = await self._conn().channel(publisher_confirms=True, on_return_raises=True)
        # A robust queue: the consumer is restored on the restored channel after a
        # reconnect (answers in flight then are lost: their askers time out).
        replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(self._answered, no_ack=True)
        self._asking = channel

    async def _answered(self, message: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(message.correlation_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(message.body)
        # else its asker gave up already: nothing to do

    @asynccontextmanager
    async def ask(self, cid: str, query: Query) -> AsyncIterator[asyncio.Future[bytes]]:
        """Queue ``query`` for the conversation's owner (confirmed: ``ConversationClosed``
        when it has no queue); yield the future of its answer's body. Unanswered, the
        query expires from the queue after its ``timeout``; leaving the block forgets it."""
        channel = self._channel(self._asking)
        correlation_id = uuid.uuid4().hex
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = answer
        properties = Properties(
            delivery_mode=TRANSIENT,  # a question nobody waits for any more is worthless
            content_type="application/json",
            reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id,
            expiration=str(int(query.timeout * 1000)),  # milliseconds
        )
        message = Message(encode_input(query), properties)
        try:
            await self._queue(channel, cid, message, query)
            yield answer
        finally:
            del self._waiting[correlation_id]
            answer.cancel()

    async def answer(self, reply_to: str, correlation_id: str, body: bytes) -> None:
        """Answer a query: straight to its asker's connection (dropped if it is gone)."""
        properties = Properties(
            delivery_mode=TRANSIENT, content_type="application/json", correlation_id=correlation_id
        )
        message = Message(body, properties)
        await self._publish_unconfirmed(message, reply_to)

    async def close_conversation(self, cid: str, reason: str) -> None:
        """Queue the close marker behind the input already queued; its owner finishes it."""
        try:
            await self.publish_input(cid, CloseMarker(reason))
        except ConversationClosed:
            return  # the queue is gone: it was finished already
        await self.request_claim(cid, "close")

    async def delete_if_empty(self, cid: str) -> bool:
        """Delete the conversation's queue unless input is waiting in it.

        On a channel of its own: a refusal closes the channel it happens on.
        """
        name = self.names.conversation_queue(cid)
        if self.queue_type == "quorum":
            return await self._delete_quorum_if_empty(cid, name)
        async with self._conn().channel(publisher_confirms=False) as channel:
            try:
                await channel.queue_delete(name, if_empty=True)
            except ChannelPreconditionFailed:
                return False
        return True

    async def _delete_quorum_if_empty(self, cid: str, name: str) -> bool:
        # RabbitMQ (3.10 to 3.13) cannot delete a quorum queue only if it is empty: it
        # answers queue.delete with if-empty by closing the whole connection. So look,
        # then delete. Input queued in between would go with the queue; the callers hold
        # new input back meanwhile (passivation's ``deleting`` marker; a closing or
        # purged conversation admits none), and the broker's count of what it deleted
        # says whether any came all the same.
        depth = await self.passive_depth(name)
        if depth is None:
            return True
        if depth:
            return False
        async with self._conn().channel(publisher_confirms=False) as channel:
            deleted = await channel.queue_delete(name)
        if deleted.message_count:
            log.error("queue_deleted_with_input", conversation_id=cid, lost=deleted.message_count)
        return True

    async def delete_queue(self, cid: str) -> None:
        """Delete the conversation's queue, whatever it holds (a purged conversation's)."""
        async with self._conn().channel(publisher_confirms=False) as channel:
            await channel.queue_delete(self.names.conversation_queue(cid))

    # --- claim requests ---------------------------------------------------------------
    async def request_claim(
        self, cid: str, cause: ClaimCause = "input", since: float | None = None
    ) -> None:
        """Ask some worker with spare capacity to claim ``cid``, owed an owner because of
        ``cause`` since ``since`` (epoch seconds; default now)."""
        request = ClaimRequest(cid, cause, time.time() if since is None else since)
        message = Message(encode_claim_request(request), Properties(delivery_mode=PERSISTENT))
        channel = self._channel(self._confirmed)
        try:
            await self._publish_confirmed_to(channel, message, self.names.dispatch_queue)
        except NOT_TAKEN as exc:
            raise Unavailable("the message broker did not confirm the claim request") from exc

    async def _publish_confirmed_to(
        self, channel: AbstractRobustChannel, message: Message, queue: str
    ) -> None:
        """Publish into ``queue`` (mandatory) and wait for the broker's confirm, within
        the publish timeout; ``PublishError`` when no queue took it.

        A quorum queue's publish refused (nack) is sent again on the channel renewed:
        RabbitMQ 3.10 refuses, for good, every publish into a quorum queue on a channel
        that first published into it while the queue's leader was lost and not yet
        replaced (as a channel restored on another node right after its node died
        does); a new channel, once a leader is elected, is served. A message refused
        may still have been queued (then it comes twice; input is deduplicated by id).
        """
        deadline = time.monotonic() + self._publish_timeout
        backoff = Backoff(first=0.05, cap=0.5)
        while True:
            renewals = self._renewals.get(channel, 0)
            try:
                await publish(
                    channel,
                    message,
                    queue,
                    mandatory=True,
                    timeout=max(deadline - time.monotonic(), 0.001),
                )
                return
            except PublishError:
                raise
            except DeliveryError:
                pause = backoff.next()
                if self.queue_type != "quorum" or time.monotonic() + pause >= deadline:
                    raise
            await self._renew(channel, renewals)
            await asyncio.sleep(pause)

    async def _renew(self, channel: AbstractRobustChannel, renewals: int) -> None:
        """Close and reopen ``channel`` (what it declared and consumes is restored),
        unless it was renewed since it had been renewed ``renewals`` times."""
        async with self._renewing:
            if self._renewals.get(channel, 0) != renewals:
                return
            self._renewals[channel] = renewals + 1
            log.warning("channel_renewed", broker=self.name, reason="publish refused")
            await channel.close()
            await channel.reopen()

    async def consume_claim_requests(
        self, on_request: Callable[[Delivery], Awaitable[None]], prefetch: int
    ) -> Consumer:
        """Take claim requests, at most ``prefetch`` unacked at a time; ``cancel`` the
        consumer to stop (a robust channel restores it after a reconnect)."""
        if self._dispatch is None or self._dispatch.channel.is_closed:
            # Closed for good (not by a reconnect, which restores it): a new one.
            channel = await self._conn().channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=prefetch)
            self._dispatch = await self._declare_durable(channel, self.names.dispatch_queue)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_request(Delivery(message))

        return Consumer(self._dispatch, await self._dispatch.consume(deliver))

    async def dispatch_backlog(self) -> int | None:
        """Claim requests waiting; None when the dispatch queue does not exist. Passive."""
        return await self.passive_depth(self.names.dispatch_queue)

    async def passive_depth(self, queue_name: str) -> int | None:
        """Messages ready in a queue; None when it does not exist. Passive: declares
        nothing (a missing queue closes the channel it was asked on: one of its own)."""
        channel = await self._conn().channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except (ChannelNotFoundEntity, ChannelClosed):
            return None
        finally:
            if not channel.is_closed:
                await channel.close()
        result = queue.declaration_result
        return int(result.message_count or 0) if result is not None else 0

    # --- the webhook outbox ------------------------------------------------------------
    async def declare_webhooks(self) -> None:
        """Make sure the outbox queues and the dead-letter queue exist."""
        channel = self._channel(self._confirmed)
        for name in self.names.webhook_queues:
            await self._declare_durable(channel, name, single_consumer=True)
        await self._declare_durable(channel, self.names.webhook_dead_letters)

    async def publish_webhook(self, webhook: Webhook) -> None:
        """Queue a delivery behind its conversation's earlier ones; return once confirmed."""
        properties = Properties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=webhook.delivery_id,
        )
        message = Message(encode_webhook(webhook), properties)
        await self._publish_confirmed(message, self.names.webhook_queue(webhook.conversation_id))

    async def dead_letter(self, body: bytes, reason: str, error: str) -> None:
        """Park an outbox message for good, saying why; return once confirmed."""
        properties = Properties(
            delivery_mode=PERSISTENT,
            content_type="application/json",
            headers={"x-fleet-reason": reason, "x-fleet-error": error[:500]},
        )
        message = Message(body, properties)
        await self._publish_confirmed(message, self.names.webhook_dead_letters)

    async def _publish_confirmed(self, message: Message, queue: str) -> None:
        channel = self._channel(self._confirmed)
        for attempt in (1, 2):
            try:
                await self._publish_confirmed_to(channel, message, queue)
                return
            except PublishError:  # unroutable: the queue is gone (deleted by hand?)
                if attempt == 2:
                    raise
                await self.declare_webhooks()

    async def consume_webhooks(
        self, on_delivery: Callable[[Delivery], Awaitable[None]], prefetch: int
    ) -> list[Consumer]:
        """Consume every outbox queue, ``prefetch`` unacked deliveries at most per queue
        (the broker makes one consumer of a queue active at a time, fleet-wide); a
        robust channel consumes again after a reconnect."""
        await self.declare_webhooks()
        channel = await self._conn().channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)  # per consumer

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_delivery(Delivery(message))

        consumers = []
        for name in self.names.webhook_queues:
            queue = await self._declare_durable(channel, name, single_consumer=True)
            consumers.append(Consumer(queue, await queue.consume(deliver)))
        return consumers

    async def webhook_backlog(self) -> tuple[int | None, int | None]:
        """Deliveries waiting in the outbox (None: no outbox queue), and dead letters
        (None: no dead-letter queue). Passive."""
        depths = [await self.passive_depth(name) for name in self.names.webhook_queues]
        found = [depth for depth in depths if depth is not None]
        waiting = sum(found) if found else None
        return waiting, await self.passive_depth(self.names.webhook_dead_letters)

    # --- live events ----------------------------------------------------------------
    def _exchange(self) -> AbstractExchange:
        if self._outbound is None:
            raise NotConnected(f"{self.name}: the outbound exchange is not declared")
        return self._outbound

    async def publish_events(self, cid: str, entries: Sequence[bytes]) -> None:
        """Send logged events to the gateways that have clients of ``cid``: one message
        per batch."""
        message = Message(encode_batch(entries), TRANSIENT_PROPERTIES)
        await self._publish_unconfirmed(message, cid, self._exchange().name)

    async def publish_frame(self, frame: StreamFrame) -> None:
        """Send a stream frame to the gateways that have clients of its conversation,
        in order with its events (same exchange, channel and routing key)."""
        message = Message(encode_frame(frame), TRANSIENT_PROPERTIES)
        await self._publish_unconfirmed(message, frame.conversation_id, self._exchange().name)

    async def _publish_unconfirmed(
        self, message: Message, routing_key: str, exchange: str = ""
    ) -> None:
        """Publish on the unconfirmed channel; wait while the socket is backed up, as
        aio-pika's publish did (it waited for each message to be written)."""
        await publish(self._channel(self._unconfirmed), message, routing_key, exchange)
        await self._conn().transports.drained()

    async def listen_events(self, on_batch: Callable[[bytes], None]) -> None:
        """Receive live-event batches of the conversations bound with ``bind_events``,
        on an exclusive queue of this process. Batches published while the connection
        was down never arrive: ``on_reconnect`` tells when to catch up from the log."""
        channel = self._channel(self._unconfirmed)
        self._live = await channel.declare_queue(exclusive=True, auto_delete=True)

        async def deliver(message: AbstractIncomingMessage) -> None:
            on_batch(message.body)

        await self._live.consume(deliver, no_ack=True)

    async def bind_events(self, cid: str) -> None:
        """Start receiving ``cid``'s live events (``listen_events`` first)."""
        if self._live is None:
            raise NotConnected(f"{self.name}: not listening for live events")
        await self._live.bind(self._exchange(), routing_key=cid)

    async def unbind_events(self, cid: str) -> None:
        if self._live is not None:
            await self._live.unbind(self._exchange(), routing_key=cid)

    # --- teardown -------------------------------------------------------------------
    async def delete(self, queues: Sequence[str], exchanges: Sequence[str] = ()) -> None:
        """Delete queues and exchanges by name, whatever they hold (test and bench
        namespaces), over the channel pool in parallel."""
        pool = self._pool or [self._channel(self._unconfirmed)]

        async def delete_part(channel: AbstractRobustChannel, part: Sequence[str]) -> None:
            for name in part:
                await channel.queue_delete(name)

        await asyncio.gather(
            *(delete_part(channel, queues[i :: len(pool)]) for i, channel in enumerate(pool))
        )
        for exchange in exchanges:
            await pool[0].exchange_delete(exchange)
