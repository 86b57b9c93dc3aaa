"""``fleet status``: live workers, what they own, the dispatch backlog and the webhook
outbox (deliveries waiting, and dead letters)."""

from __future__ import annotations

import sys
from typing import cast

from redis.exceptions import RedisError

from broker.amqp import Broker
from broker.dependencies import describe, redact
from broker.names import Names
from broker.redis import connect, text
from broker.settings import Settings


async def show_status(settings: Settings) -> int:
    """Print the fleet's state; 1 (and one line saying which) when a server is down."""
    try:
        await _show(settings)
    except (RedisError, OSError) as exc:
        return _unreachable("Redis", settings.redis_url, exc)
    except AMQPUnreachable as exc:
        return _unreachable("RabbitMQ", settings.amqp_url, exc)
    return 0


def _unreachable(name: str, url: str, exc: BaseException) -> int:
    print(f"fleet status: {name} at {redact(url)} is unreachable: {describe(exc)}", file=sys.stderr)
    return 1


async def _show(settings: Settings) -> None:
    names = Names(settings.namespace)
    redis = connect(settings.redis_url)
    try:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        workers = cast(
            list[tuple[bytes, float]],
            await redis.zrange(names.deadlines("worker"), 0, -1, withscores=True),
        )
        print(f"namespace {settings.namespace!r}: {len(workers)} worker(s)")
        for raw_id, deadline in workers:
            worker_id = text(raw_id)
            owned = await redis.scard(names.owns(worker_id))
            alive = await redis.exists(names.alive("worker", worker_id))
            state = "alive" if alive else f"dead for {(now_ms - deadline) / 1000:.1f}s"
            print(f"  {worker_id:<40} {state:<18} {owned} conversation(s)")
    finally:
        await redis.aclose()
    broker = Broker(settings.amqp_url, names, name="fleet-status")
    try:
        await broker.connect(declare=False)
    except Exception as exc:
        raise AMQPUnreachable(str(exc)) from exc
    try:
        backlog = await broker.dispatch_backlog()
        webhooks, dead = await broker.webhook_backlog()
    finally:
        await broker.close()
    if backlog is None:
        print("dispatch backlog: no dispatch queue (no fleet has run in this namespace)")
    else:
        print(f"dispatch backlog: {backlog} claim request(s)")
    if webhooks is None and dead is None:
        print("webhooks: no webhook outbox (webhooks have not run in this namespace)")
    else:
        print(f"webhooks: {webhooks or 0} delivery(ies) waiting, {dead or 0} dead letter(s)")


class AMQPUnreachable(Exception):
    """RabbitMQ did not answer."""
