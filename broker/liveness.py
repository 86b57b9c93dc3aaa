"""Liveness of workers and gateways: one short-TTL key per process, and an index of
deadlines that the reaper sweeps for the dead (no SCAN, no keyspace events needed).
Each key group holds its own copy of both (see ``broker.names``): a heartbeat renews
them all, and a process is alive only while every copy is.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum

from broker import scripts
from broker.events import ProcessInfo, encode_process_info
from broker.names import Names, Role
from broker.redis import Client, text


class Beat(IntEnum):
    """What a heartbeat found; false only when the liveness key had lapsed."""

    LAPSED = 0
    ALIVE = 1
    DRAIN = 2  # alive, and an operator asked it to drain (``fleet drain``)


class Liveness:
    """Heartbeats, the expired, and forgetting them, for one role of process."""

    def __init__(self, redis: Client, names: Names, role: Role) -> None:
        self.redis = redis
        self.names = names
        self.role = role
        self._heartbeat = scripts.load(redis, names, "heartbeat")
        self._expired = scripts.load(redis, names, "expired")
        self._forget_script = scripts.load(redis, names, "forget")

    async def heartbeat(
        self,
        process_id: str,
        ttl: float,
        register: bool = False,
        info: ProcessInfo | None = None,
    ) -> Beat:
        """Renew liveness in every group (or create it with ``register``, holding
        ``info``): lapsed if it lapsed in any."""
        n, role = self.names, self.role
        value = encode_process_info(info) if info is not None else b"1"
        args: list[str | int | bytes] = [
            process_id,
            int(ttl * 1000),
            "1" if register else "0",
            value,
        ]
        beats = await asyncio.gather(
            *(
                self._heartbeat(
                    keys=[
                        n.alive(role, process_id, group),
                        n.deadlines(role, group),
                        n.drain(role, process_id, group),
                    ],
                    args=args,
                )
                for group in n.all_groups
            )
        )
        return Beat(0) if 0 in beats else Beat(max(beats))

    async def expired(self, limit: int = 100) -> list[str]:
        """Processes past their deadline whose liveness key is gone, in group 0 (every
        process has a copy there; ``forget`` forgets group 0 last)."""
        keys = [self.names.deadlines(self.role, 0)]
        return [text(i) for i in await self._expired(keys=keys, args=[self.role, limit])]

    async def deadline(self, process_id: str) -> float | None:
        """Until when its last heartbeat kept it alive (epoch seconds, Redis clock)."""
        score = await self.redis.zscore(self.names.deadlines(self.role, 0), process_id)
        return None if score is None else score / 1000

    async def expire(self, process_id: str) -> None:
        """Declare a process dead now: the reaper deals with what it held."""
        n = self.names
        await asyncio.gather(
            *(self.redis.delete(n.alive(self.role, process_id, g)) for g in n.all_groups)
        )

    async def forget(self, process_id: str, leaving: bool = False) -> int:
        """Drop a dead (or, with ``leaving``, departing) process and what it held, in every
        group; how many conversations that was, or -1 when it turned out to be alive (in
        some group: then its group 0 copy stays, for the next sweep to find)."""
        others = await asyncio.gather(
            *(self._forget(process_id, g, leaving) for g in self.names.all_groups if g)
        )
        if -1 in others:
            return -1
        first = await self._forget(process_id, 0, leaving)
        return -1 if first == -1 else first + sum(others)

    async def _forget(self, process_id: str, group: int, leaving: bool) -> int:
        n = self.names
        keys = [
            n.deadlines(self.role, group),
            n.alive(self.role, process_id, group),
            n.index(self.role, process_id, group),
            n.pending(group),
        ]
        args = [process_id, self.role, "1" if leaving else "0"]
        return int(await self._forget_script(keys=keys, args=args))
