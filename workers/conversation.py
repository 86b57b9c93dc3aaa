"""One conversation's loop: consume its queue, log each input (fenced), acknowledge
it, and hand it to the conversation's turns (or, an owner query, to its queries)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from broker import metrics, tracing
from broker.amqp import INTERRUPTED, Broker
from broker.backoff import Backoff
from broker.errors import LeaseLost
from broker.events import (
    Action,
    CloseMarker,
    Event,
    Malformed,
    NewEvent,
    Query,
    TimerFired,
    decode_input,
)
from broker.inbox import Delivery, Inbox
from broker.leases import Leases
from broker.names import lease_value
from broker.store import Store
from broker.timers import Timers
from workers.agents import Agent
from workers.queries import OwnerQueries
from workers.scribe import Scribe
from workers.stream import Streamer
from workers.turns import TurnRunner
from workers.webhook_relay import WebhookRelay

log = structlog.get_logger()


class ConversationLoop:
    """Runs one conversation under one lease epoch until drained or fenced."""

    def __init__(
        self,
        cid: str,
        worker_id: str,
        epoch: int,
        agent: Agent,
        store: Store,
        timers: Timers,
        leases: Leases,
        broker: Broker,
        alive: Callable[[], bool],
        closing: str | None = None,
        relay: WebhookRelay | None = None,
        took_over: bool = False,
        handed_over: bool = False,
    ) -> None:
        self.conversation_id = cid
        # Taken over from a holder that died: it may have logged events it never published.
        self._took_over = took_over
        # Handed over by a draining worker: it moves the next one once we consume.
        self._handed_over = handed_over
        self._moved = took_over or handed_over  # its first consume is worth a line
        self.worker_id = worker_id
        self.epoch = epoch
        self.lease = lease_value(worker_id, epoch)
        self._store = store
        self._timers = timers
        self._leases = leases
        self._broker = broker
        self.log = log.bind(conversation_id=cid, worker_id=worker_id, epoch=epoch)
        self.relay = relay  # queues the state changes for webhooks, if any
        self.scribe = Scribe(
            cid,
            self.lease,
            store,
            timers,
            broker,
            alive,
            relay.state_logged if relay else None,
        )
        self.turns = TurnRunner(
            agent, self.scribe, Streamer(self.scribe, epoch), epoch, self._fail, self.log
        )
        self.queries = OwnerQueries(agent, broker, self.log)
        self._inbox: Inbox | None = None
        self._draining = False
        self._failure: BaseException | None = None  # a turn found the lease lost
        self._retry = Backoff(first=0.05)
        self._closing = False  # the close marker was logged; finish once the queue is empty
        # Claimed while closing for good: queue a close marker of our own, in case the
        # one the closer published was lost with it (a duplicate changes nothing).
        self._owed_marker = closing
        self.finished = False  # closed for good: nothing to hand over
        self._handling = False
        self._last_input = time.monotonic()
        self.stopped_at: float | None = None  # when drained: it took no input since

    @property
    def idle_since(self) -> float | None:
        """Since when nothing happened: no input in hand, no turn running or waiting,
        no query being answered, no state change still to queue for webhooks."""
        relaying = self.relay is not None and self.relay.behind
        if self._handling or self.turns.busy or self.queries.busy or relaying:
            return None
        return max(self._last_input, self.turns.last_end, self.queries.last_end)

    async def run(self) -> None:
        """Resume the turns, then consume until drained; raise ``LeaseLost`` when fenced.

        A lost channel ends the consumer; the robust connection reopens it and we
        consume again, with capped exponential backoff.
        """
        relaying: asyncio.Task[None] | None = None
        try:
            if self.relay is not None:
                await self.relay.start()
                relaying = asyncio.create_task(self.relay.run())
            state = await self._store.turns(self.conversation_id, self._took_over)
            if state.tail:
                await self.scribe.publish(state.tail)
            self.turns.policy = state.on_busy
            self.turns.first_new_id = state.next_id
            await self.turns.resume([Event.from_json(raw) for raw in state.since])
            backoff = Backoff()
            while not self._draining and not self.finished:
                try:
                    await self._consume()
                    backoff.reset()
                except INTERRUPTED as exc:
                    self.log.warning("consume_interrupted", error=repr(exc))
                if self._failure is not None:
                    raise self._failure
                if not self._draining and not self.finished:
                    await backoff.sleep()
        finally:
            # A turn cut short here resumes on the next owner, from its last logged step;
            # a query cut short tells its asker to retry.
            await asyncio.shield(self.turns.halt())
            await asyncio.shield(self.queries.close())
            await asyncio.shield(self.scribe.flush())
            if relaying is not None:  # what it did not queue, the next owner will
                relaying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relaying

    async def _consume(self) -> None:
        self._inbox = inbox = await self._broker.inbox(self.conversation_id)
        if self._failure is not None:  # a turn failed while it opened: ``_fail`` missed it
            inbox.close()
        metrics.CLAIMED_BACKLOG.observe(inbox.waiting)
        if self._moved:  # it answers again after a failover or a drain
            self._moved = False
            self.log.info("consuming", waiting=inbox.waiting)
            if self._handed_over:
                try:
                    await self._leases.consuming(self.conversation_id, self.epoch)
                except Exception as exc:  # the drain goes on without it, after its patience
                    self.log.warning("consuming_not_announced", error=repr(exc))
        if self._owed_marker is not None:
            await self._broker.publish_input(self.conversation_id, CloseMarker(self._owed_marker))
            self._owed_marker = None
        try:
            while not self._draining and (delivery := await inbox.next()) is not None:
                self._handling = True
                try:
                    await self._process(delivery)
                finally:
                    self._handling = False
                    self._last_input = time.monotonic()
                if self._closing:
                    # Give back what we hold first: the queue is deleted only if nothing
                    # is left in it, and a consumer of a deleted queue is not left behind.
                    await inbox.release()
                    self.finished = await self._finish()
                    return  # finished, or input arrived meanwhile: consume it again
        finally:
            # Shielded: what we hold must go back to the queue even if we are cancelled.
            await asyncio.shield(inbox.release())

    def _fail(self, failure: BaseException) -> None:
        """A turn cannot go on (its lease is lost): stop consuming, and raise it."""
        self._failure = failure
        if self._inbox is not None:
            self._inbox.close()

    def reconsume(self) -> None:
        """After a broker reconnect: consume again on the restored channel."""
        if self._inbox is not None:
            self._inbox.close()

    async def drain(self) -> None:
        """Stop after the input in hand; what is not yet logged goes back to the queue."""
        self._draining = True
        self.stopped_at = time.time()
        if self._inbox is not None:
            await self._inbox.release()

    async def _process(self, delivery: Delivery) -> None:
        try:
            item = decode_input(delivery.body)
        except Malformed as exc:
            self.log.warning("input_malformed", error=str(exc))
            await delivery.reject()
            return
        if isinstance(item, Query):
            await self._ask(item, delivery)
            return
        # Acknowledged once logged: from then on the log is the record (a crash now
        # leaves an unfinished turn that the next owner resumes). Requeued on any
        # failure before that: logged here or by the next owner, once (dedupe keys).
        if isinstance(item, Action) and item.kind == "message" and item.sent_at:
            self.scribe.expect_reply(item.action_id, item.sent_at)
        try:
            async with delivery.processing():
                with tracing.span(
                    "fleet.input",
                    {"fleet.conversation_id": self.conversation_id, "fleet.epoch": self.epoch},
                    tracing.Kind.CONSUMER,
                    tracing.extract(delivery.headers),
                ):
                    await self._handle(item)
        except LeaseLost:
            raise
        except Exception as exc:
            self.log.warning("input_retry", message_id=delivery.message_id, error=repr(exc))
            await self._retry.sleep()
        else:
            self._retry.reset()

    async def _ask(self, query: Query, delivery: Delivery) -> None:
        """An owner query: acknowledged at once (answered at most once, see
        ``workers.queries``), then answered beside the turns, not behind them."""
        try:
            await delivery.ack()
        except Exception as exc:  # the channel died: the broker gave it back already
            self.log.warning("query_ack_failed", error=repr(exc))
            return
        if self._closing:
            await self.queries.refuse(delivery.reply_to, delivery.correlation_id)
        else:
            self.queries.start(query, delivery.reply_to, delivery.correlation_id)

    async def _handle(self, item: Action | CloseMarker | TimerFired) -> None:
        if isinstance(item, CloseMarker):
            await self.turns.close()
            await self.scribe.log(
                NewEvent("system", "closed", {"reason": item.reason}), once="closed"
            )
            self._closing = True
        elif isinstance(item, TimerFired):
            if not self._closing:  # else it is cleared with the conversation
                await self.turns.timer(item)
        elif self._closing:
            await self._late(item)
        elif item.kind == "stop":
            await self.turns.stop(item)
        elif item.kind == "approval":
            await self.turns.approve(item)
        else:
            await self.turns.message(item)

    async def _late(self, action: Action) -> None:
        """Admitted just before the close, queued just behind it: logged, not run."""
        await self.scribe.log(action.event(), once=f"action:{action.action_id}")
        error = {
            "code": "conversation_closed",
            "message": "the conversation was closed",
            "action_id": action.action_id,
        }
        await self.scribe.log(NewEvent("system", "error", error), once=f"late:{action.action_id}")

    async def _finish(self) -> bool:
        """Once the queue is empty: delete it and mark the conversation closed (fenced)."""
        if self.relay is not None:  # no owner comes after this one to queue the rest
            await self.relay.flush()
        if not await self._broker.delete_if_empty(self.conversation_id):
            return False
        if not await self._leases.finish(self.conversation_id, self.worker_id, self.epoch):
            raise LeaseLost(f"lease {self.lease} moved on before closing")
        await self._timers.clear(self.conversation_id)
        self.log.info("conversation_closed")
        return True
