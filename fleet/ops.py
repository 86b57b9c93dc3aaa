"""What the ops commands share: one fleet's Redis and RabbitMQ seen read-only (passive
queue checks declare nothing), the Redis clock they judge by, and one clear line on
stderr when a server cannot be reached."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from broker.amqp import Broker
from broker.dependencies import describe, redact
from broker.redis import Client, connect
from broker.settings import Settings

# Exit status of an ops command whose Redis or RabbitMQ is unreachable.
UNREACHABLE = 1


class BrokerUnreachable(Exception):
    """RabbitMQ did not answer."""


class OpsError(Exception):
    """An ops command cannot do what it was asked (an unknown id, ...): one line, status 1."""


class Ops:
    """One fleet, for one ops command: Redis at once, RabbitMQ on first use."""

    def __init__(self, settings: Settings, command: str) -> None:
        self.settings = settings
        self.names = settings.names
        self.redis: Client = connect(settings.redis_url, settings.redis_cluster)
        self._broker: Broker | None = None
        self._command = command

    async def broker(self) -> Broker:
        """The AMQP connection, opened without declaring anything."""
        if self._broker is None:
            broker = Broker(
                self.settings.amqp_url,
                self.names,
                name=f"fleet-{self._command}",
                queue_type=self.settings.queue_type,
            )
            try:
                await broker.connect(declare=False)
            except Exception as exc:
                raise BrokerUnreachable(describe(exc)) from exc
            self._broker = broker
        return self._broker

    async def owned(self, worker_id: str) -> int:
        """How many conversations a worker owns, in all its key groups."""
        n = self.names
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in n.all_groups:
                pipe.scard(n.owns(worker_id, group))
            return sum(await pipe.execute())

    async def now_ms(self) -> int:
        """The Redis clock, which every deadline and index score is kept in."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.close()
        await self.redis.aclose()


async def run(settings: Settings, command: str, action: Callable[[Ops], Awaitable[int]]) -> int:
    """Run ``action``; its exit status, or 1 and one line when it cannot be done."""
    ops = Ops(settings, command)
    try:
        return await action(ops)
    except (RedisError, OSError) as exc:
        return fail(
            command, f"Redis at {redact(settings.redis_url)} is unreachable: {describe(exc)}"
        )
    except BrokerUnreachable as exc:
        return fail(command, f"RabbitMQ at {redact(settings.amqp_url)} is unreachable: {exc}")
    except OpsError as exc:
        return fail(command, str(exc))
    finally:
        with contextlib.suppress(Exception):  # already reported, or nothing to close
            await ops.close()


def fail(command: str, message: str) -> int:
    print(f"fleet {command}: {message}", file=sys.stderr)
    return UNREACHABLE


def ago(seconds: float) -> str:
    """A duration as an operator reads it: 42s, 3m 5s, 2h 10m, 4d 3h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows aligned under their header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
