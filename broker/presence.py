"""Which gateway has clients in which conversation, and of which user, counted per
gateway; and the limit of connections per user across every gateway.

Counts live in hashes keyed by gateway, never in keys with a TTL of their own, so a
dead gateway's connections are forgotten by one script once its liveness key lapses
(``Liveness.forget``, no SCAN).
"""

from __future__ import annotations

from broker import scripts
from broker.names import Names
from broker.redis import Client


class Presence:
    """Clients of one gateway joining and leaving conversations."""

    def __init__(self, redis: Client, names: Names, gateway_id: str, limit: int = 0) -> None:
        self.names = names
        self.gateway_id = gateway_id
        self.limit = limit  # connections per user across gateways (0: none)
        self._count = scripts.load(redis, names, "presence")

    async def joined(self, cid: str, user: str, enforce: bool = True) -> bool:
        """Count a client in; False (and nothing counted) when its user is at the limit
        (unless not ``enforce``d: a gateway recounting the clients it has)."""
        return await self._change(cid, user, 1, self.limit if enforce else 0)

    async def left(self, cid: str, user: str) -> None:
        await self._change(cid, user, -1, 0)

    async def _change(self, cid: str, user: str, delta: int, limit: int) -> bool:
        n = self.names
        keys = [n.clients(cid), n.connections(user), n.gateway_index(self.gateway_id, n.group(cid))]
        args: list[str | int] = [self.gateway_id, cid, user, delta, limit]
        return bool(await self._count(keys=keys, args=args))
