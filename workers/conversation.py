"""One conversation's agent loop: consume its queue, log fenced, publish, ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from broker.amqp import INTERRUPTED, Broker
from broker.backoff import Backoff
from broker.errors import LeaseLost
from broker.events import (
    Action,
    CloseMarker,
    Event,
    Malformed,
    NewEvent,
    decode_input,
    with_id,
)
from broker.inbox import Delivery, Inbox
from broker.leases import Leases
from broker.names import lease_value
from broker.store import Store
from workers.agents import Agent

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
        leases: Leases,
        broker: Broker,
        alive: Callable[[], bool],
        closing: str | None = None,
    ) -> None:
        self.conversation_id = cid
        self.worker_id = worker_id
        self.epoch = epoch
        self.lease = lease_value(worker_id, epoch)
        self._agent = agent
        self._store = store
        self._leases = leases
        self._broker = broker
        self._alive = alive
        self._inbox: Inbox | None = None
        self._draining = False
        self._retry = Backoff(first=0.05)
        self._closing = False  # the close marker was logged; finish once the queue is empty
        # Claimed while closing for good: queue a close marker of our own, in case the
        # one the closer published was lost with it (a duplicate changes nothing).
        self._owed_marker = closing
        self.finished = False  # closed for good: nothing to hand over
        self.idle_since: float | None = time.monotonic()  # None while handling input
        self.log = log.bind(conversation_id=cid, worker_id=worker_id, epoch=epoch)

    async def run(self) -> None:
        """Consume until drained; raise ``LeaseLost`` when fenced.

        A lost channel ends the consumer; the robust connection reopens it and we
        consume again, with capped exponential backoff.
        """
        backoff = Backoff()
        while not self._draining and not self.finished:
            try:
                await self._consume()
                backoff.reset()
            except INTERRUPTED as exc:
                self.log.warning("consume_interrupted", error=repr(exc))
            if not self._draining and not self.finished:
                await backoff.sleep()

    async def _consume(self) -> None:
        self._inbox = inbox = await self._broker.inbox(self.conversation_id)
        if self._owed_marker is not None:
            await self._broker.publish_input(self.conversation_id, CloseMarker(self._owed_marker))
            self._owed_marker = None
        try:
            while not self._draining and (delivery := await inbox.next()) is not None:
                self.idle_since = None
                await self._process(delivery)
                self.idle_since = time.monotonic()
                if self._closing:
                    # Give back what we hold first: the queue is deleted only if nothing
                    # is left in it, and a consumer of a deleted queue is not left behind.
                    await inbox.release()
                    self.finished = await self._finish()
                    return  # finished, or input arrived meanwhile: consume it again
        finally:
            # Shielded: what we hold must go back to the queue even if we are cancelled.
            await asyncio.shield(inbox.release())

    def reconsume(self) -> None:
        """After a broker reconnect: consume again on the restored channel."""
        if self._inbox is not None:
            self._inbox.close()

    async def drain(self) -> None:
        """Stop after the action in hand; the unstarted ones go back to the queue."""
        self._draining = True
        if self._inbox is not None:
            await self._inbox.release()

    async def _process(self, delivery: Delivery) -> None:
        try:
            item = decode_input(delivery.body)
        except Malformed as exc:
            self.log.warning("input_malformed", error=str(exc))
            await delivery.reject()
            return
        work = self._handle(item) if isinstance(item, Action) else self._close(item.reason)
        # Requeue on any failure: the action is redone here or by the next owner,
        # and the ``once`` keys keep the log free of duplicates.
        try:
            async with delivery.processing():
                await work
        except LeaseLost:
            raise
        except Exception as exc:
            self.log.warning("action_retry", message_id=delivery.message_id, error=repr(exc))
            await self._retry.sleep()
        else:
            self._retry.reset()

    async def _handle(self, action: Action) -> None:
        user_event = action.event()
        first_id = await self.emit(user_event, once=f"action:{action.action_id}")
        if self._closing:
            # Admitted just before the close, queued just behind it: logged, not run.
            error = {"code": "conversation_closed", "message": "the conversation was closed"}
            await self.emit(NewEvent("system", "error", error), once=f"late:{action.action_id}")
            return
        event = Event(
            first_id,
            self.conversation_id,
            user_event.source,
            user_event.kind,
            user_event.data,
            user_event.ts,
        )
        try:
            await self._agent.on_event(event, self)
        except LeaseLost:
            raise
        except Exception as exc:
            self.log.exception("agent_failed", action_id=action.action_id)
            await self.emit(
                NewEvent("system", "error", {"message": f"agent failed: {exc!r}"}),
                once=f"error:{action.action_id}",
            )

    async def _close(self, reason: str) -> None:
        await self.emit(NewEvent("system", "closed", {"reason": reason}), once="closed")
        self._closing = True

    async def _finish(self) -> bool:
        """Once the queue is empty: delete it and mark the conversation closed (fenced)."""
        if not await self._broker.delete_if_empty(self.conversation_id):
            return False
        if not await self._leases.finish(self.conversation_id, self.worker_id, self.epoch):
            raise LeaseLost(f"lease {self.lease} moved on before closing")
        self.log.info("conversation_closed")
        return True

    async def emit(self, *events: NewEvent, once: str = "") -> int:
        """Log ``events`` under this loop's lease, then publish them; the first id."""
        if not self._alive():
            raise LeaseLost(f"liveness of {self.lease} lapsed")
        cid = self.conversation_id
        bodies = [event.body(cid) for event in events]
        appended = await self._store.append(cid, self.lease, bodies, once)
        if appended.duplicate:
            # Logged by an earlier delivery that may have died before publishing:
            # publish again; gateways drop ids they already delivered.
            entries = appended.entries
        else:
            entries = [with_id(appended.first_id + i, body) for i, body in enumerate(bodies)]
        await self._broker.publish_events(cid, entries)
        return appended.first_id

    async def history(self) -> list[Event]:
        return [Event.from_json(raw) for raw in await self._store.read(self.conversation_id)]
