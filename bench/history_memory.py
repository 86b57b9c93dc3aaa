"""Redis memory per passivated conversation, with history in PostgreSQL or without:
``python -m bench.history_memory [--conversations N] [--turns N]``.

Two local fleets of real processes (gateway, worker, reaper; the echo agent) on the
local Redis, RabbitMQ and PostgreSQL, one with ``FLEET_POSTGRES_URL`` and one without,
each given the same conversations of the same turns over HTTP. Once every
conversation is passivated (and, with PostgreSQL, its history moved), it prints the
bytes Redis spends per conversation: ``MEMORY USAGE`` of the conversation's own keys,
and of every key of the fleet's namespace (per-user sets, indexes, liveness: all of it)
divided by the conversations (not ``used_memory``: the Redis is shared). Each fleet's
keys, queues and schema are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis

from broker import postgres, tokens
from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, purge

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
AT_ONCE = 10  # conversations driven concurrently
TIMEOUT = 30.0  # seconds a turn, or the passivation of every conversation, may take


@dataclass(frozen=True, slots=True)
class Figures:
    mode: str
    conversations: int
    events: int  # per conversation
    key_bytes: float  # mean MEMORY USAGE of a conversation's keys, once passivated
    namespace_bytes: float  # MEMORY USAGE of every key of the fleet, per conversation


async def drive(url: str, bearer: str, turns: int) -> str:
    """A conversation of ``turns`` messages, each answered before the next."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {bearer}"}
    ) as api:
        cid: str = (await api.post("/api/conversations", json={})).json()["conversation_id"]
        for turn in range(turns):
            content = f"message {turn}: " + "lorem ipsum " * 20
            body = {"kind": "message", "data": {"content": content}, "action_id": f"t{turn}"}
            assert (await api.post(f"/api/conversations/{cid}/actions", json=body)).is_success
            async with asyncio.timeout(TIMEOUT):
                while len(await events(api, cid)) < 4 * (turn + 1):  # noqa: ASYNC110 (HTTP)
                    await asyncio.sleep(0.02)
        return cid


async def events(api: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.get(f"/api/conversations/{cid}/events")).json()[
        "events"
    ]
    return found


async def measure(mode: str, conversations: int, turns: int) -> Figures:
    namespace = f"bench-history-{secrets.token_hex(3)}"
    archived = mode == "postgres"
    settings = Settings(
        namespace=namespace,
        jwt_secret=secrets.token_urlsafe(32),
        passivate_after=1.0,
        publish_timeout=1.0,
        max_conversations_per_user=1_000_000,
        rate_limit=1_000_000.0,
        rate_burst=1_000_000,
        postgres_url=POSTGRES_URL if archived else None,
    )
    names = Names(namespace)
    redis = Redis.from_url(settings.redis_url)
    try:
        async with LocalFleet(settings) as fleet:
            _, url = await fleet.gateway()
            await fleet.worker()
            await fleet.reaper()
            bearer = tokens.issue(settings.require_jwt_secret(), "bench", 3600)
            slots = asyncio.Semaphore(AT_ONCE)

            async def one() -> str:
                async with slots:
                    return await drive(url, bearer, turns)

            cids = await asyncio.gather(*(one() for _ in range(conversations)))
            async with asyncio.timeout(TIMEOUT):
                while not await settled(redis, names, cids, archived):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            sizes = [await key_bytes(redis, names, cid) for cid in cids]
            everything = await key_bytes(redis, names, "")
        return Figures(
            mode, conversations, 4 * turns, statistics.mean(sizes), everything / conversations
        )
    finally:
        await purge(namespace, settings.redis_url, settings.amqp_url)
        if archived:
            await postgres.drop(POSTGRES_URL, [names.schema])
        await redis.aclose()


async def settled(redis: Redis, names: Names, cids: list[str], archived: bool) -> bool:
    """Every conversation passivated and, with PostgreSQL, its log moved there."""
    for cid in cids:
        if await redis.hget(names.meta(cid), "status") != b"idle" or (
            archived and await redis.exists(names.log(cid))
        ):
            return False
    return True


async def key_bytes(redis: Redis, names: Names, cid: str) -> int:
    """``MEMORY USAGE`` summed over the conversation's own keys (every key of the
    namespace when ``cid`` is empty)."""
    total = 0
    pattern = f"{names.conv(cid)}:*" if cid else f"{names.namespace}:*"
    async for key in redis.scan_iter(match=pattern):
        total += await redis.memory_usage(key, samples=0) or 0
    return total


async def main(conversations: int, turns: int) -> None:
    rows = [await measure(mode, conversations, turns) for mode in ("redis", "postgres")]
    print(
        f"{'history in':<12}{'conversations':>14}{'events each':>13}{'keys B/conv':>13}"
        f"{'namespace B/conv':>18}"
    )
    for row in rows:
        print(
            f"{row.mode:<12}{row.conversations:>14}{row.events:>13}{row.key_bytes:>13,.0f}"
            f"{row.namespace_bytes:>18,.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.history_memory", description=__doc__)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.conversations, args.turns))
