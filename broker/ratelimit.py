"""Per-user request rates, counted in Redis so they hold across every gateway."""

from __future__ import annotations

from dataclasses import dataclass

from broker import scripts
from broker.errors import RateLimited
from broker.names import Names
from broker.redis import Client


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` requests on average, ``burst`` at once."""

    per_second: float
    burst: int

    def args(self) -> list[float | int]:
        """What the scripts take: the interval between requests (ms), and the burst."""
        return [1000.0 / self.per_second, self.burst]


def refuse(wait_ms: int) -> RateLimited:
    return RateLimited("too many requests; slow down", retry_after=wait_ms / 1000)


class RateLimiter:
    """Takes one request of a user's allowance, or refuses it with when to retry."""

    def __init__(self, redis: Client, names: Names, rate: Rate) -> None:
        self.names = names
        self.rate = rate
        self._take = scripts.load(redis, names, "rate")

    async def take(self, user: str) -> None:
        """Count a request; ``RateLimited`` (with ``retry_after``) when over the rate."""
        wait_ms = int(await self._take(keys=[self.names.rate(user)], args=self.rate.args()))
        if wait_ms:
            raise refuse(wait_ms)
