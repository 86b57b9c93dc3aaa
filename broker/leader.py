"""The reaper's leader lease: one active reaper at a time, a standby takes over."""

from __future__ import annotations

from broker import scripts
from broker.names import Names
from broker.redis import Client


class LeaderLease:
    """Held by one process id for ``ttl`` seconds at a time, renewed by holding again."""

    def __init__(self, redis: Client, names: Names, holder: str, ttl: float) -> None:
        self.holder = holder
        self.ttl = ttl
        self._key = names.reaper_leader
        self._leader = scripts.load(redis, names, "leader")

    async def hold(self) -> bool:
        """Keep (or take) the lease; whether we lead now."""
        args: list[str | int] = [self.holder, int(self.ttl * 1000), "hold"]
        return bool(await self._leader(keys=[self._key], args=args))

    async def resign(self) -> None:
        await self._leader(keys=[self._key], args=[self.holder, 0, "release"])
