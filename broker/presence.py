"""Which gateway has clients in which conversation, under a liveness key per gateway.

Counts live in two hashes (per conversation and per gateway), never in keys with a
TTL of their own, so a dead gateway's connections are forgotten by one script once
its liveness key lapses (no SCAN).
"""

from __future__ import annotations

from redis.asyncio import Redis

from broker import scripts
from broker.names import Names
from broker.redis import text


class Presence:
    """Gateway liveness and its clients' presence in conversations."""

    def __init__(self, redis: Redis, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._count = scripts.load(redis, "presence")
        self._heartbeat = scripts.load(redis, "heartbeat")
        self._dead = scripts.load(redis, "dead_workers")
        self._forget = scripts.load(redis, "forget_gateway")

    async def joined(self, gateway_id: str, cid: str, delta: int = 1) -> None:
        n = self.names
        keys = [n.clients(cid), n.gateway_conversations(gateway_id)]
        await self._count(keys=keys, args=[gateway_id, cid, delta])

    async def left(self, gateway_id: str, cid: str) -> None:
        await self.joined(gateway_id, cid, -1)

    async def heartbeat(self, gateway_id: str, ttl: float, register: bool = False) -> bool:
        """Renew (or create) a gateway's liveness; False when it had lapsed."""
        n = self.names
        keys = [n.gateway_alive(gateway_id), n.gateway_deadlines]
        args: list[str | int] = [gateway_id, int(ttl * 1000), "1" if register else "0"]
        return bool(await self._heartbeat(keys=keys, args=args))

    async def dead_gateways(self, limit: int = 100) -> list[str]:
        n = self.names
        ids = await self._dead(keys=[n.gateway_deadlines], args=[n.gateway_alive_prefix, limit])
        return [text(i) for i in ids]

    async def forget(self, gateway_id: str, leaving: bool = False) -> int:
        """Forget a gateway's connections; -1 when it turned out to be alive."""
        n = self.names
        keys = [
            n.gateway_deadlines,
            n.gateway_alive(gateway_id),
            n.gateway_conversations(gateway_id),
        ]
        args = [gateway_id, n.conv_prefix, "1" if leaving else "0"]
        return int(await self._forget(keys=keys, args=args))
