"""Purging old conversations for good: closed ones, and ones idle for long.

Safe against races, one conversation at a time (``lua/purge.lua``): it is held
(status ``purging``: no input admitted, no claim) only while it still qualifies; its
queue is deleted only if empty, else it is restored and owed an owner; only then are
its keys and index entries deleted. A conversation that received input before the
hold is not held; input after it is refused. A purge that stopped half way is
finished by the next one.
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast, get_args

from broker import scripts
from broker.amqp import Broker
from broker.names import Names
from broker.redis import Client, one_of, text

PurgeKind = Literal["closed", "idle"]
# See lua/purge.lua.
PurgeOutcome = Literal[
    "held",
    "deleted",
    "restored",
    "gone",
    "not_held",
    "not_closed",
    "not_idle",
    "recent",
    "owned",
    "watched",
    "pending",
    "unfinished",
]
Step = Literal["check", "hold", "delete", "restore"]


class Retention:
    """Finds and purges conversations of one fleet."""

    def __init__(self, redis: Client, names: Names, broker: Broker) -> None:
        self.redis = redis
        self.names = names
        self.broker = broker
        self._purge = scripts.load(redis, names, "purge")

    async def count(self, kind: PurgeKind, cutoff_ms: int) -> int:
        """How many conversations of ``kind`` may qualify (closed, or idle, before the cutoff)."""
        n = self.names
        counts = await asyncio.gather(
            *(self.redis.zcount(n.by_status(kind, g), "-inf", cutoff_ms) for g in n.all_groups)
        )
        return sum(counts)

    async def candidates(
        self, kind: PurgeKind, cutoff_ms: int, group: int, offset: int, limit: int
    ) -> list[str]:
        """The group's conversations of ``kind`` since before the cutoff, oldest first."""
        found = await self.redis.zrangebyscore(
            self.names.by_status(kind, group), "-inf", cutoff_ms, offset, limit
        )
        return [text(cid) for cid in cast(list[bytes], found)]

    async def check(self, cid: str, kind: PurgeKind, cutoff_ms: int) -> PurgeOutcome:
        """Whether it would be purged now ('held'), or why not; changes nothing."""
        return await self._step(cid, "check", kind, cutoff_ms)

    async def purge(self, cid: str, kind: PurgeKind, cutoff_ms: int) -> PurgeOutcome:
        """Delete the conversation for good if it still qualifies: 'deleted', 'restored'
        (input was waiting in its queue: it is owed an owner again), or why not."""
        held = await self._step(cid, "hold", kind, cutoff_ms)
        if held != "held":
            return held
        if kind == "closed":
            await self.broker.delete_queue(cid)  # a closed conversation takes no input
        elif not await self.broker.delete_if_empty(cid):
            restored = await self._step(cid, "restore", kind, cutoff_ms)
            if restored == "restored":
                await self.broker.request_claim(cid, "input")
            return restored
        return await self._step(cid, "delete", kind, cutoff_ms)

    async def _step(self, cid: str, step: Step, kind: PurgeKind, cutoff_ms: int) -> PurgeOutcome:
        n, group = self.names, self.names.group(cid)
        keys = [
            n.meta(cid),
            n.lease(cid),
            n.epoch(cid),
            n.log(cid),
            n.once(cid),
            n.actions(cid),
            n.stream(cid),
            n.clients(cid),
            n.pending(group),
            n.by_status("idle", group),
            n.by_status("closing", group),
            n.by_status("closed", group),
            n.full(group),
        ]
        reply = await self._purge(keys=keys, args=[cid, step, kind, cutoff_ms])
        return one_of(reply, get_args(PurgeOutcome))
