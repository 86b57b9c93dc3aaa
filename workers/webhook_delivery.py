"""Delivers the webhook outbox: each delivery POSTed, signed, to its receiver, in order
per conversation and target; retried with capped exponential backoff until
FLEET_WEBHOOK_RETRY_FOR after it was queued, then parked with the dead letters.

Every worker with webhooks on consumes every outbox queue, and the broker keeps one
consumer of each queue active at a time: the others stand by, and one takes over
when it dies (what it held goes back to the queue, in order). Inside a queue,
deliveries go to one lane per (conversation, target): a lane delivers one at a time,
in queue order, and backs off on its own when its receiver fails while the other
lanes go on. What a lane waits with stays unacked, so a receiver that is down holds up
the other conversations of its queue only once PREFETCH of its deliveries wait there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import httpx
import structlog

from broker import metrics
from broker.amqp import Broker, Consumer
from broker.backoff import Backoff
from broker.events import Malformed, Webhook, WebhookTarget, decode_webhook
from broker.inbox import Delivery
from broker.settings import Settings
from broker.webhook_cursors import WebhookCursors
from broker.webhooks import SIGNATURE_HEADER, AddressRefused, public_addresses, signature

log = structlog.get_logger()

PREFETCH = 256  # unacked deliveries per outbox queue
MAX_RESPONSE_BYTES = 64 * 1024  # read of a receiver's answer; the rest is dropped
CONSUME_RETRY = Backoff(first=0.1, cap=5.0)

Outcome = Literal["delivered", "failed", "refused"]
LaneKey = tuple[str, WebhookTarget]


@dataclass(slots=True)
class Lane:
    """One conversation's deliveries to one target, in queue order."""

    waiting: deque[tuple[Delivery, Webhook]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    failing: bool = False  # said once in the log per run of failures


class WebhookDeliverer:
    """Consumes the outbox queues and delivers them; ``run`` as a task of the worker."""

    def __init__(self, settings: Settings, broker: Broker, cursors: WebhookCursors) -> None:
        key = settings.webhook_signing_key
        if key is None:
            raise ValueError("webhooks need FLEET_WEBHOOK_SECRET")
        self._key = key
        self._broker = broker
        self._cursors = cursors
        self._timeout = settings.webhook_timeout
        self._retry_for = settings.webhook_retry_for
        self._retry_cap = settings.webhook_retry_cap
        self._allow_private = settings.webhook_allow_private
        self._lanes: dict[LaneKey, Lane] = {}
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> None:
        """Consume and deliver until cancelled; what is held then goes back to the queues."""
        consumers: list[Consumer] = []
        # No redirects (a receiver could send us anywhere) and no proxy from the
        # environment: a delivery goes to the addresses that were checked.
        async with httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, trust_env=False
        ) as self._client:
            try:
                consumers = await self._consume()
                await asyncio.Event().wait()
            finally:
                for consumer in consumers:
                    with contextlib.suppress(Exception):
                        await consumer.cancel()
                await asyncio.shield(self._drop_lanes())

    async def _consume(self) -> list[Consumer]:
        retry = Backoff(CONSUME_RETRY.first, CONSUME_RETRY.cap)
        while True:
            try:
                return await self._broker.consume_webhooks(self._received, PREFETCH)
            except Exception as exc:  # the broker is down: its robust connection comes back
                log.warning("webhook_consume_failed", error=repr(exc))
                await retry.sleep()

    def reconnected(self) -> None:
        """The broker took back what the old channel held, and the restored consumers
        (restored before this is called) get it again: drop the old copies, and let
        each lane go on with what came on the new channel (all behind the old)."""
        for key, lane in list(self._lanes.items()):
            fresh = deque(item for item in lane.waiting if not item[0].stale)
            if len(fresh) == len(lane.waiting):
                continue
            if lane.task is not None:
                lane.task.cancel()
            del self._lanes[key]
            if fresh:
                self._lanes[key] = renewed = Lane(fresh)
                renewed.task = asyncio.create_task(self._run_lane(key, renewed))

    async def _drop_lanes(self) -> None:
        """Stop every lane; what they held goes back to its queue, in place."""
        lanes = list(self._lanes.values())
        self._lanes.clear()
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in lanes:
            for delivery, _ in lane.waiting:
                await delivery.requeue()

    # --- lanes ----------------------------------------------------------------------
    async def _received(self, delivery: Delivery) -> None:
        try:
            webhook = decode_webhook(delivery.body)
        except Malformed as exc:
            log.warning("webhook_malformed", error=str(exc))
            await delivery.reject()
            return
        key = (webhook.conversation_id, webhook.target)
        lane = self._lanes.setdefault(key, Lane())
        lane.waiting.append((delivery, webhook))
        if lane.task is None:
            lane.task = asyncio.create_task(self._run_lane(key, lane))

    async def _run_lane(self, key: LaneKey, lane: Lane) -> None:
        try:
            while lane.waiting:
                delivery, webhook = lane.waiting[0]
                await self._settle(lane, delivery, webhook)
                lane.waiting.popleft()
        finally:
            if self._lanes.get(key) is lane and not lane.waiting:
                del self._lanes[key]

    async def _settle(self, lane: Lane, delivery: Delivery, webhook: Webhook) -> None:
        """Deliver, or give up on, one delivery; then ack it. Retried until one of them."""
        retry = Backoff(first=min(1.0, self._retry_cap), cap=self._retry_cap)
        cid, target, event_id = webhook.conversation_id, webhook.target, webhook.event_id
        bound = log.bind(conversation_id=cid, delivery_id=webhook.delivery_id, target=target)
        while not delivery.stale:  # else the broker took it back: it comes again, in place
            try:
                if await self._cursors.delivered(cid, target) >= event_id:
                    await delivery.ack()  # a copy of one delivered (or given up on) before
                    return
                outcome, error = await self._attempt(webhook)
                metrics.WEBHOOK_ATTEMPTS.labels(
                    "delivered" if outcome == "delivered" else "failed"
                ).inc()
                if outcome == "delivered":
                    await self._cursors.mark_delivered(cid, target, event_id)
                    await delivery.ack()
                    if lane.failing:
                        bound.info("webhook_recovered")
                        lane.failing = False
                    return
                expired = time.time() >= webhook.queued_at + self._retry_for
                if outcome == "refused" or expired:
                    reason = "address_refused" if outcome == "refused" else "expired"
                    await self._broker.dead_letter(delivery.body, reason, error)
                    # Later deliveries go on, in order behind this one.
                    await self._cursors.mark_delivered(cid, target, event_id)
                    await delivery.ack()
                    metrics.WEBHOOK_ATTEMPTS.labels("dead_lettered").inc()
                    bound.warning("webhook_dead_lettered", reason=reason, error=error)
                    return
                if not lane.failing:
                    bound.warning("webhook_failing", error=error)
                    lane.failing = True
            except Exception as exc:  # Redis or the broker: the delivery is still ours
                bound.warning("webhook_settle_failed", error=repr(exc))
            await retry.sleep()

    # --- one attempt ----------------------------------------------------------------
    async def _attempt(self, webhook: Webhook) -> tuple[Outcome, str]:
        """POST the delivery once; 2xx is delivered, anything else (or no answer within
        FLEET_WEBHOOK_TIMEOUT) failed. A callback_url is called only at the addresses
        its host resolves to now, all public, unless FLEET_WEBHOOK_ALLOW_PRIVATE."""
        body = webhook.body()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(self._key, body)}
        try:
            async with asyncio.timeout(self._timeout):
                if webhook.target == "fleet" or self._allow_private:
                    destinations = [Destination(httpx.URL(webhook.url))]
                else:
                    try:
                        addresses = await public_addresses(webhook.url)
                    except AddressRefused as exc:
                        return "refused", f"callback_url refused: {exc}"
                    except OSError as exc:
                        return "failed", f"callback_url's host does not resolve: {exc}"
                    destinations = [pinned(webhook.url, address) for address in addresses]
                return await self._post(destinations, body, headers)
        except TimeoutError:
            return "failed", f"no answer within {self._timeout}s"

    async def _post(
        self, destinations: list[Destination], body: bytes, headers: dict[str, str]
    ) -> tuple[Outcome, str]:
        """POST to the first destination that takes the connection."""
        assert self._client is not None
        error = "no address"
        for destination in destinations:
            try:
                status = await self._send(destination, body, headers)
            except httpx.ConnectError as exc:
                error = f"ConnectError: {exc}"
                continue  # the host's next address
            except httpx.HTTPError as exc:  # never the URL: it may hold a token
                return "failed", f"{type(exc).__name__}: {exc}"
            return ("delivered", "") if 200 <= status < 300 else ("failed", f"HTTP {status}")
        return "failed", error

    async def _send(self, destination: Destination, body: bytes, headers: dict[str, str]) -> int:
        """The status of one POST; at most MAX_RESPONSE_BYTES of the answer are read."""
        assert self._client is not None
        if destination.host is not None:
            headers = {**headers, "Host": destination.host}
        extensions = {"sni_hostname": destination.sni} if destination.sni else {}
        async with self._client.stream(
            "POST", destination.url, content=body, headers=headers, extensions=extensions
        ) as response:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_RESPONSE_BYTES:
                    break
            return response.status_code


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one POST goes: a URL, and when that URL names a checked address instead
    of its host, the name for the Host header and for TLS (SNI and the certificate)."""

    url: httpx.URL
    host: str | None = None
    sni: str | None = None


def pinned(url: str, address: str) -> Destination:
    """``url`` sent to ``address``, and nowhere a later DNS answer would say."""
    named = httpx.URL(url)
    sni = named.host if named.scheme == "https" else None
    return Destination(named.copy_with(host=address), named.netloc.decode(), sni)
