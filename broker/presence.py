"""Which gateway has clients in which conversation, counted per gateway.

Counts live in two hashes (per conversation and per gateway), never in keys with a
TTL of their own, so a dead gateway's connections are forgotten by one script once
its liveness key lapses (``Liveness.forget``, no SCAN).
"""

from __future__ import annotations

from redis.asyncio import Redis

from broker import scripts
from broker.names import Names


class Presence:
    """Clients of one gateway joining and leaving conversations."""

    def __init__(self, redis: Redis, names: Names, gateway_id: str) -> None:
        self.names = names
        self.gateway_id = gateway_id
        self._count = scripts.load(redis, names, "presence")

    async def joined(self, cid: str) -> None:
        await self._change(cid, 1)

    async def left(self, cid: str) -> None:
        await self._change(cid, -1)

    async def _change(self, cid: str, delta: int) -> None:
        n = self.names
        keys = [n.clients(cid), n.gateway_conversations(self.gateway_id)]
        await self._count(keys=keys, args=[self.gateway_id, cid, delta])
