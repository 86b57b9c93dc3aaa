"""Conversation leases: fenced claims, release, passivation and finishing, in Redis.

A lease is ``worker_id:epoch`` with no TTL of its own; it is valid while its
worker's liveness key exists (``broker.liveness``). Every claim bumps the epoch,
the fencing token that the append script checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from broker import scripts
from broker.names import Names, lease_value
from broker.redis import Client, one_of, text

# See lua/claim.lua for what each outcome means.
ClaimOutcome = Literal["claimed", "owned", "busy", "closed", "unknown", "not_alive", "over_limit"]
# See lua/passivate.lua.
PassivationOutcome = Literal["passivated", "moved", "closing", "watched", "active"]


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim, with the epoch it holds (or saw)."""

    outcome: ClaimOutcome
    epoch: int
    took_over: bool = False
    closing: str | None = None  # why, when the conversation is closing for good


class Leases:
    """Claim, release, passivate and finish conversations; list what a worker owns."""

    def __init__(self, redis: Client, names: Names, archiving: bool = False) -> None:
        self.redis = redis
        self.names = names
        # History archiving is on: passivated and closed conversations are owed a move.
        self._archive = "1" if archiving else ""
        self._claim = scripts.load(redis, names, "claim")
        self._release = scripts.load(redis, names, "release")
        self._finish = scripts.load(redis, names, "finish")
        self._passivate = scripts.load(redis, names, "passivate")
        self._pending = scripts.load(redis, names, "pending")

    async def claim(self, cid: str, worker_id: str, user_limit: int) -> Claim:
        n, group = self.names, self.names.group(cid)
        outcome, epoch, took_over, closing = await self._claim(
            keys=[
                n.meta(cid),
                n.lease(cid),
                n.epoch(cid),
                n.owns(worker_id, group),
                n.pending(group),
                n.by_status("idle", group),
            ],
            args=[cid, worker_id, user_limit],
        )
        return Claim(
            one_of(outcome, get_args(ClaimOutcome)),
            int(epoch),
            bool(took_over),
            text(closing) or None,
        )

    async def pending(self, group: int, older_than: float, limit: int = 100) -> list[str]:
        """The group's conversations owed an owner for more than ``older_than`` seconds
        (their claim request was lost, or no worker could take it); they count as asked
        again now."""
        keys = [self.names.pending(group)]
        return [
            text(c) for c in await self._pending(keys=keys, args=[int(older_than * 1000), limit])
        ]

    async def release(self, cid: str, worker_id: str, epoch: int) -> bool:
        """Compare-and-delete: False when the lease had already moved on."""
        n, group = self.names, self.names.group(cid)
        released = await self._release(
            keys=[n.lease(cid), n.meta(cid), n.owns(worker_id, group), n.by_status("idle", group)],
            args=[lease_value(worker_id, epoch), cid],
        )
        return bool(released)

    async def finish(self, cid: str, worker_id: str, epoch: int) -> bool:
        """Mark a closing conversation closed (fenced); False when the lease moved on."""
        n, group = self.names, self.names.group(cid)
        keys = [
            n.lease(cid),
            n.meta(cid),
            n.owns(worker_id, group),
            n.by_status("closing", group),
            n.by_status("closed", group),
            n.archive_owed(group),
        ]
        args = [lease_value(worker_id, epoch), cid, self._archive]
        return bool(await self._finish(keys=keys, args=args))

    async def passivate(
        self, cid: str, worker_id: str, epoch: int, idle: float, deleting: float
    ) -> PassivationOutcome:
        """Release an idle conversation's lease and slot, unless someone still needs it;
        then its queue is to be deleted (within ``deleting`` seconds: ``queue_deleted``)."""
        n, group = self.names, self.names.group(cid)
        keys = [
            n.lease(cid),
            n.meta(cid),
            n.owns(worker_id, group),
            n.clients(cid),
            n.deleting(cid),
            n.by_status("idle", group),
            n.archive_owed(group),
        ]
        lease = lease_value(worker_id, epoch)
        args: list[str | int] = [lease, cid, int(idle * 1000), int(deleting * 1000), self._archive]
        return one_of(await self._passivate(keys=keys, args=args), get_args(PassivationOutcome))

    async def queue_deleted(self, cid: str) -> None:
        """The passivated conversation's queue is gone (or kept: input came): input
        need not wait any more."""
        await self.redis.delete(self.names.deleting(cid))

    async def consuming(self, cid: str, epoch: int) -> None:
        """A handed-over conversation's new owner consumes its queue (the epoch of its
        lease): the drained worker moves the next one on seeing it."""
        await self.redis.hset(self.names.meta(cid), "consuming", epoch)

    async def consumed_since(self, epochs: Mapping[str, int]) -> set[str]:
        """Those of these conversations a later epoch than the one given consumes."""
        cids = list(epochs)
        if not cids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.hget(self.names.meta(cid), "consuming")
            found = await pipe.execute()
        return {cid for cid, at in zip(cids, found, strict=True) if int(at or 0) > epochs[cid]}

    async def owned_by(self, worker_id: str) -> list[str]:
        """What the worker owns, in every group."""
        n = self.names
        owned = await asyncio.gather(
            *(self.redis.smembers(n.owns(worker_id, g)) for g in n.all_groups)
        )
        return [text(c) for members in owned for c in members]
