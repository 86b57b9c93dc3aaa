"""One conversation's agent loop: consume its queue, log fenced, publish, ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from aio_pika.exceptions import AMQPError

from broker.amqp import Broker
from broker.errors import LeaseLost
from broker.events import Action, Event, NewEvent, with_id
from broker.leases import Leases, lease_value
from broker.store import Store
from workers.agents import Agent
from workers.inbox import Inbox

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
        channel: AbstractRobustChannel,
        alive: Callable[[], bool],
    ) -> None:
        self.conversation_id = cid
        self.worker_id = worker_id
        self.epoch = epoch
        self.lease = lease_value(worker_id, epoch)
        self._agent = agent
        self._store = store
        self._leases = leases
        self._broker = broker
        self._channel = channel
        self._alive = alive
        self._inbox: Inbox | None = None
        self._draining = False
        self._retry_delay = 0.025
        self._closing = False  # the close marker was logged; finish once the queue is empty
        self.finished = False  # closed for good: nothing to hand over
        self.idle_since: float | None = time.monotonic()  # None while handling input
        self.log = log.bind(conversation_id=cid, worker_id=worker_id, epoch=epoch)

    async def run(self) -> None:
        """Consume until drained; raise ``LeaseLost`` when fenced.

        A lost channel ends the consumer; the robust connection reopens it and we
        consume again, with capped exponential backoff.
        """
        delay = 0.05
        while not self._draining and not self.finished:
            try:
                await self._consume()
                delay = 0.05
            except (AMQPError, ConnectionError) as exc:
                self.log.warning("consume_interrupted", error=repr(exc))
            if not self._draining and not self.finished:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _consume(self) -> None:
        queue = await self._broker.declare_conversation(self.conversation_id, self._channel)
        self._inbox = inbox = Inbox()
        try:
            await inbox.consume(queue)
            while not self._draining and (message := await inbox.next()) is not None:
                self.idle_since = None
                await self._process(message)
                self.idle_since = time.monotonic()
                if self._closing:
                    self.finished = await self._finish()
                    if self.finished:
                        return
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

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            payload = orjson.loads(message.body)
            work = (
                self._close(str(payload["reason"]))
                if payload.get("kind") == "close"
                else self._handle(Action.from_payload(payload))
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.warning("action_malformed", size=len(message.body))
            await message.reject(requeue=False)
            return
        # Requeue on any failure: the action is redone here or by the next owner,
        # and the ``once`` keys keep the log free of duplicates.
        try:
            async with message.process(requeue=True):
                await work
        except LeaseLost:
            raise
        except Exception as exc:
            self.log.warning("action_retry", message_id=message.message_id, error=repr(exc))
            self._retry_delay = min(self._retry_delay * 2, 2.0)
            await asyncio.sleep(self._retry_delay)
        else:
            self._retry_delay = 0.025

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
