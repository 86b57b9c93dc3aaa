"""Liveness of workers and gateways: one short-TTL key per process, and an index of
deadlines that the reaper sweeps for the dead (no SCAN, no keyspace events needed).
"""

from __future__ import annotations

from enum import IntEnum

from redis.asyncio import Redis

from broker import scripts
from broker.events import ProcessInfo, encode_process_info
from broker.names import Names, Role
from broker.redis import text


class Beat(IntEnum):
    """What a heartbeat found; false only when the liveness key had lapsed."""

    LAPSED = 0
    ALIVE = 1
    DRAIN = 2  # alive, and an operator asked it to drain (``fleet drain``)


class Liveness:
    """Heartbeats, the expired, and forgetting them, for one role of process."""

    def __init__(self, redis: Redis, names: Names, role: Role) -> None:
        self.redis = redis
        self.names = names
        self.role = role
        self._heartbeat = scripts.load(redis, names, "heartbeat")
        self._expired = scripts.load(redis, names, "expired")
        self._forget = scripts.load(redis, names, "forget")

    async def heartbeat(
        self,
        process_id: str,
        ttl: float,
        register: bool = False,
        info: ProcessInfo | None = None,
    ) -> Beat:
        """Renew liveness (or create it with ``register``, holding ``info``)."""
        n = self.names
        value = encode_process_info(info) if info is not None else b"1"
        beat = await self._heartbeat(
            keys=[
                n.alive(self.role, process_id),
                n.deadlines(self.role),
                n.drain(self.role, process_id),
            ],
            args=[process_id, int(ttl * 1000), "1" if register else "0", value],
        )
        return Beat(int(beat))

    async def expired(self, limit: int = 100) -> list[str]:
        """Processes past their deadline whose liveness key is gone."""
        ids = await self._expired(keys=[self.names.deadlines(self.role)], args=[self.role, limit])
        return [text(i) for i in ids]

    async def deadline(self, process_id: str) -> float | None:
        """Until when its last heartbeat kept it alive (epoch seconds, Redis clock)."""
        score = await self.redis.zscore(self.names.deadlines(self.role), process_id)
        return None if score is None else score / 1000

    async def expire(self, process_id: str) -> None:
        """Declare a process dead now: the reaper deals with what it held."""
        await self.redis.delete(self.names.alive(self.role, process_id))

    async def forget(self, process_id: str, leaving: bool = False) -> int:
        """Drop a dead (or, with ``leaving``, departing) process and its index; how many
        conversations its index held, or -1 when it turned out to be alive."""
        n = self.names
        keys = [
            n.deadlines(self.role),
            n.alive(self.role, process_id),
            n.index(self.role, process_id),
            n.pending,
        ]
        args = [process_id, self.role, "1" if leaving else "0"]
        return int(await self._forget(keys=keys, args=args))
