"""Ownership: fenced conversation leases and per-worker liveness, in Redis.

A lease is ``worker_id:epoch`` with no TTL of its own; it is valid while its
worker's liveness key exists. Every claim bumps the epoch, the fencing token that
the append script checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from broker import scripts
from broker.names import Names
from broker.redis import text


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim: see ``lua/claim.lua`` for the outcomes."""

    outcome: str
    epoch: int
    took_over: bool = False


def lease_value(worker_id: str, epoch: int) -> str:
    return f"{worker_id}:{epoch}"


class Leases:
    """Claim and release conversations; keep workers' liveness; find dead workers."""

    def __init__(self, redis: Redis, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._claim = scripts.load(redis, "claim")
        self._release = scripts.load(redis, "release")
        self._heartbeat = scripts.load(redis, "heartbeat")
        self._dead_workers = scripts.load(redis, "dead_workers")
        self._forget_worker = scripts.load(redis, "forget_worker")
        self._finish = scripts.load(redis, "finish")
        self._passivate = scripts.load(redis, "passivate")
        self._leader = scripts.load(redis, "leader")

    async def claim(self, cid: str, worker_id: str, user_limit: int) -> Claim:
        n = self.names
        outcome, epoch, took_over = await self._claim(
            keys=[n.meta(cid), n.lease(cid), n.epoch(cid), n.owns(worker_id)],
            args=[cid, worker_id, n.alive_prefix, n.owns_prefix, n.user_prefix, user_limit],
        )
        return Claim(text(outcome), int(epoch), bool(took_over))

    async def finish(self, cid: str, worker_id: str, epoch: int) -> bool:
        """Mark a closing conversation closed (fenced); False when the lease moved on."""
        n = self.names
        keys = [n.lease(cid), n.meta(cid), n.owns(worker_id)]
        return bool(await self._finish(keys=keys, args=[lease_value(worker_id, epoch), cid]))

    async def passivate(self, cid: str, worker_id: str, epoch: int, idle: float) -> str:
        """Release an idle conversation's lease and slot; 'passivated' or why not."""
        n = self.names
        keys = [n.lease(cid), n.meta(cid), n.owns(worker_id), n.clients(cid)]
        args: list[str | int] = [
            lease_value(worker_id, epoch),
            cid,
            int(idle * 1000),
            n.user_prefix,
        ]
        return text(await self._passivate(keys=keys, args=args))

    async def release(self, cid: str, worker_id: str, epoch: int) -> bool:
        """Compare-and-delete: False when the lease had already moved on."""
        n = self.names
        released = await self._release(
            keys=[n.lease(cid), n.meta(cid), n.owns(worker_id)],
            args=[lease_value(worker_id, epoch), cid],
        )
        return bool(released)

    async def heartbeat(self, worker_id: str, ttl: float, register: bool = False) -> bool:
        """Renew liveness (or create it with ``register``); False when it had lapsed."""
        n = self.names
        alive = await self._heartbeat(
            keys=[n.alive(worker_id), n.worker_deadlines],
            args=[worker_id, int(ttl * 1000), "1" if register else "0"],
        )
        return bool(alive)

    async def expire(self, worker_id: str) -> None:
        """Declare a worker dead now: the reaper re-dispatches what it owned."""
        await self.redis.delete(self.names.alive(worker_id))

    async def retire(self, worker_id: str) -> None:
        """A worker leaving on purpose: drop its liveness and index entries."""
        n = self.names
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(n.alive(worker_id), n.owns(worker_id))
            pipe.zrem(n.worker_deadlines, worker_id)
            await pipe.execute()

    async def dead_workers(self, limit: int = 100) -> list[str]:
        n = self.names
        ids = await self._dead_workers(keys=[n.worker_deadlines], args=[n.alive_prefix, limit])
        return [i.decode() for i in ids]

    async def owned_by(self, worker_id: str) -> list[str]:
        return [text(c) for c in await self.redis.smembers(self.names.owns(worker_id))]

    async def forget(self, worker_id: str) -> bool:
        n = self.names
        keys = [n.worker_deadlines, n.alive(worker_id), n.owns(worker_id)]
        return bool(await self._forget_worker(keys=keys, args=[worker_id]))

    async def lead(self, reaper_id: str, ttl: float) -> bool:
        """Hold (or take) the reaper leadership for ``ttl`` seconds."""
        keys = [self.names.reaper_leader]
        return bool(await self._leader(keys=keys, args=[reaper_id, int(ttl * 1000), "hold"]))

    async def resign(self, reaper_id: str) -> None:
        await self._leader(keys=[self.names.reaper_leader], args=[reaper_id, 0, "release"])
