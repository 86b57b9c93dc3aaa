"""What every scenario of one run shares: the plan, the ceilings, names, secrets, clients."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from bench.ceilings import Ceilings
from bench.fleet import LocalFleet
from bench.plan import Plan
from bench.procstat import CpuMeter
from broker import tokens

# Every bench fleet: neither the per-user limit nor the per-client rate limit may cap
# a load test (it measures the fleet, not its throttles), and idle conversations must
# stay owned while they are measured.
FLEET_ENV = {
    "FLEET_MAX_CONVERSATIONS_PER_USER": "1000000",
    "FLEET_RATE_LIMIT": "1000000",
    "FLEET_RATE_BURST": "1000000",
    "FLEET_CLOSE_DELAY": "3600",
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
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # pids of the local Redis and RabbitMQ, for CPU accounting (shared with other users)
    service_pids: dict[str, int] = field(default_factory=dict)

    def fleet(self, name: str, **env: str) -> LocalFleet:
        """A fleet in its own namespace ``<base>-<name>``: scenarios never see each other."""
        return LocalFleet(
            f"{self.base}-{name}",
            self.redis_url,
            self.amqp_url,
            self.jwt_secret,
            self.workdir,
            **{**FLEET_ENV, **env},
        )

    def cpu_meter(self, fleet: LocalFleet) -> CpuMeter:
        """CPU time of the fleet's running processes, the bench clients, Redis and RabbitMQ."""
        pids = {p.name: p.pid for p in fleet.processes if p.running}
        return CpuMeter({**pids, "bench clients": os.getpid(), **self.service_pids})

    def token(self, user: str) -> str:
        return tokens.issue(self.jwt_secret, user, ttl=3600)

    def users(self, count: int) -> list[str]:
        """Tokens of ``count`` users: conversations are spread over them."""
        return [self.token(f"bench-user-{i}") for i in range(count)]
