"""A conversation's state changes, from its log to the webhook outbox, in log order.

Driven by the log, not by the code that logs: the scribe wakes the relay when it logs
a state change, and the relay reads the log after its cursor (``meta.outboxed``),
queues one delivery per state change and target (confirmed by the broker), then moves
the cursor. A crash anywhere in between loses nothing: the next owner starts from the
cursor, so a state change logged by an owner that died before queueing it is queued
by the next one, and one queued just before a crash is queued twice (with the same
delivery id: the deliverer skips the copy). A conversation with state changes not yet
queued is not passivated, and is not closed for good before they are.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import structlog

from broker.amqp import Broker
from broker.backoff import Backoff
from broker.events import Webhook, WebhookTarget
from broker.settings import Settings
from broker.store import Store
from broker.webhook_cursors import WebhookCursors

READ_BATCH = 500  # log entries read at a time while catching up
RETRY = Backoff(first=0.1, cap=5.0)


class WebhookRelay:
    """Queues one conversation's state changes for its webhook targets; ``start``, then
    ``run`` as a task while the conversation is owned. Only with webhooks on (a secret
    to sign with): without, nothing is relayed and the cursor stays, for an owner that
    has it to catch up from."""

    def __init__(
        self,
        cid: str,
        settings: Settings,
        cursors: WebhookCursors,
        store: Store,
        broker: Broker,
    ) -> None:
        self.conversation_id = cid
        self._fleet_url = settings.webhook_url
        self._cursors = cursors
        self._store = store
        self._broker = broker
        self._log = structlog.get_logger().bind(conversation_id=cid)
        self.targets: list[tuple[WebhookTarget, str]] = []  # none: the relay does nothing
        self._user = ""
        self._cursor = -1  # every state change up to this log id is queued
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._logged = 0  # wake-ups so far; ``behind`` until a flush started after the last
        self._flushed = 0

    async def start(self) -> None:
        """Find the conversation's targets and its cursor. Before anything is logged
        under this lease: what the last owner logged but did not queue is caught up."""
        record = await self._cursors.record(self.conversation_id)
        if record is None:
            return
        targets: list[tuple[WebhookTarget, str]] = []
        if self._fleet_url:
            targets.append(("fleet", self._fleet_url))
        if record.callback_url:
            targets.append(("callback", record.callback_url))
        if not targets:
            return
        if record.outboxed is None:  # created before webhooks were on: from now on
            self._cursor = await self._cursors.start_outbox(self.conversation_id)
        else:
            self._cursor = record.outboxed
        self._user = record.user
        self.targets = targets
        self.state_logged()  # catch up

    def state_logged(self) -> None:
        """A state change was (or may have been) logged: queue it soon."""
        if self.targets:
            self._logged += 1
            self._wake.set()

    @property
    def behind(self) -> bool:
        """State changes may be logged that are not queued yet."""
        return self._flushed != self._logged

    async def run(self) -> None:
        """Queue what is logged whenever woken, until cancelled; retry failures with backoff."""
        retry = Backoff(RETRY.first, RETRY.cap)
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                retry.reset()
            except Exception as exc:
                self._log.warning("webhook_relay_failed", error=repr(exc))
                self._wake.set()
                await retry.sleep()

    async def flush(self) -> None:
        """Queue every state change logged after the cursor, in log order, then move it."""
        if not self.targets:
            return
        async with self._lock:
            wanted = self._logged
            while True:
                entries = await self._store.read(self.conversation_id, self._cursor, READ_BATCH)
                for offset, entry in enumerate(entries):
                    if orjson.loads(entry)["kind"] == "state":
                        await self._queue(self._cursor + 1 + offset, entry)
                if entries:
                    last = self._cursor + len(entries)
                    self._cursor = await self._cursors.outboxed(self.conversation_id, last)
                if len(entries) < READ_BATCH:
                    break
            self._flushed = wanted

    async def _queue(self, event_id: int, entry: bytes) -> None:
        queued_at = time.time()
        for target, url in self.targets:
            webhook = Webhook(
                self.conversation_id, self._user, target, url, event_id, entry, queued_at
            )
            await self._broker.publish_webhook(webhook)
