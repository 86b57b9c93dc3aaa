"""What every scenario of one run shares: the plan, the ceilings, names, secrets, clients."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.ceilings import Ceilings
from bench.peer import Peer
from bench.plan import Plan
from bench.procstat import CpuMeter
from broker import tokens
from broker.settings import Settings
from fleet.harness import LocalFleet, purge

# Every bench fleet: neither the per-user limit nor the per-client rate limit may cap
# a load test (it measures the fleet, not its throttles), and idle conversations must
# stay owned while they are measured.
FLEET_SETTINGS: dict[str, Any] = {
    "max_conversations_per_user": 1_000_000,
    "max_connections_per_user": 1_000_000,
    "rate_limit": 1_000_000.0,
    "rate_burst": 1_000_000,
    "passivate_after": 3600.0,
}


@dataclass
class Context:
    plan: Plan
    base: str  # every namespace of this run starts with it: bench-<hex>
    redis_url: str
    amqp_url: str
    redis: Redis
    workdir: Path
    ceilings: Ceilings = field(default_factory=Ceilings)
    peer: Peer | None = None  # Celery's figures, once its scenario ran
    profile: Path | None = None  # where py-spy's flame graphs go, when the run profiles
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # pids of the local Redis and RabbitMQ, for CPU accounting (shared with other users)
    service_pids: dict[str, int] = field(default_factory=dict)

    @asynccontextmanager
    async def fleet(
        self, name: str, redis_url: str | None = None, **env: str
    ) -> AsyncIterator[LocalFleet]:
        """A fleet in its own namespace ``<base>-<name>`` (scenarios never see each
        other), on the run's Redis unless ``redis_url`` names another, logging to the
        run's directory; killed (no drain: its namespace is deleted next) and purged
        on exit."""
        redis_url = redis_url or self.redis_url
        settings = Settings(
            namespace=f"{self.base}-{name}",
            redis_url=redis_url,
            amqp_url=self.amqp_url,
            jwt_secret=self.jwt_secret,
            log_level="INFO",
            **FLEET_SETTINGS,
        )
        fleet = LocalFleet(settings, **env)
        fleet.log_dir = self.workdir
        try:
            yield fleet
        finally:
            await fleet.close(graceful=False)
            await purge(settings.namespace, redis_url, self.amqp_url)

    def cpu_meter(self, fleet: LocalFleet) -> CpuMeter:
        """CPU time of the fleet's running processes, the bench clients, Redis and RabbitMQ."""
        pids = {p.name: p.pid for p in fleet.processes if p.running}
        return CpuMeter({**pids, "bench clients": os.getpid(), **self.service_pids})

    def token(self, user: str) -> str:
        return tokens.issue(self.jwt_secret, user, ttl=3600)

    def users(self, count: int) -> list[str]:
        """Tokens of ``count`` users: conversations are spread over them."""
        return [self.token(f"bench-user-{i}") for i in range(count)]
