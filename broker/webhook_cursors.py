"""How far a conversation's webhooks went, in Redis: up to which log id its state
changes are in the webhook outbox (``meta.outboxed``, moved by the relay), and the last
event id each target got (``<ns>:conv:{cid}:webhooks``, moved by the deliverer). Both
only move forward (``lua/raise.lua``): a write from a process that was paused or
fenced meanwhile cannot undo a newer one, and each says something that stays true.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker import scripts
from broker.events import WebhookTarget
from broker.names import Names
from broker.redis import Client, text

OUTBOXED = "outboxed"  # the meta field


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """What a conversation's relay needs from its record."""

    user: str
    callback_url: str | None
    outboxed: int | None  # None: never relayed (created before webhooks were on)


class WebhookCursors:
    """Read and move the two cursors of a conversation's webhooks."""

    def __init__(self, redis: Client, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._raise = scripts.load(redis, names, "raise")

    async def record(self, cid: str) -> WebhookRecord | None:
        user, callback_url, outboxed = await self.redis.hmget(
            self.names.meta(cid), "user", "callback_url", OUTBOXED
        )
        if user is None:
            return None
        return WebhookRecord(
            text(user),
            text(callback_url) if callback_url else None,
            int(outboxed) if outboxed is not None else None,
        )

    async def start_outbox(self, cid: str) -> int:
        """Relay from the end of the log as it is now: for a conversation created before
        webhooks were turned on (its owner holds the lease, so nothing is appended
        meanwhile). Where the relay starts (its cursor)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.names.meta(cid), "archived")  # ids below it are in PostgreSQL
            pipe.llen(self.names.log(cid))
            archived, length = await pipe.execute()
        return await self.outboxed(cid, int(archived or 0) + length - 1)

    async def outboxed(self, cid: str, event_id: int) -> int:
        """Every state change up to ``event_id`` is in the outbox; the cursor now."""
        return int(await self._raise(keys=[self.names.meta(cid)], args=[OUTBOXED, event_id]))

    async def delivered(self, cid: str, target: WebhookTarget) -> int:
        """The last event id ``target`` got (or that was given up on); -1 for none."""
        value = await self.redis.hget(self.names.webhooks(cid), target)
        return int(value) if value is not None else -1

    async def mark_delivered(self, cid: str, target: WebhookTarget, event_id: int) -> None:
        await self._raise(keys=[self.names.webhooks(cid)], args=[target, event_id])
