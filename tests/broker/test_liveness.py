"""Liveness of workers and gateways on the real Redis: heartbeat, expiry, forgetting."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from broker.liveness import Liveness
from broker.names import Names
from broker.presence import Presence

TTL = 0.3


async def wait_until_expired(liveness: Liveness, process_id: str) -> None:
    async with asyncio.timeout(5):
        while process_id not in await liveness.expired():
            await asyncio.sleep(0.02)


async def test_a_lapsed_heartbeat_is_never_renewed(redis: Redis, names: Names) -> None:
    workers = Liveness(redis, names, "worker")
    assert await workers.heartbeat("worker-a", TTL, register=True)
    assert await workers.heartbeat("worker-a", TTL)
    await wait_until_expired(workers, "worker-a")
    assert not await workers.heartbeat("worker-a", TTL)
    await redis.sadd(names.owns("worker-a", 0), "c1", "c2")
    assert await workers.forget("worker-a") == 2
    assert "worker-a" not in await workers.expired()
    assert not await redis.exists(names.owns("worker-a", 0))


async def test_a_live_process_is_not_forgotten_unless_leaving(redis: Redis, names: Names) -> None:
    workers = Liveness(redis, names, "worker")
    await workers.heartbeat("worker-a", 30, register=True)
    assert await workers.forget("worker-a") == -1
    assert await redis.exists(names.alive("worker", "worker-a", 0))
    assert await workers.forget("worker-a", leaving=True) == 0
    assert not await redis.exists(names.alive("worker", "worker-a", 0))
    assert await redis.zscore(names.deadlines("worker", 0), "worker-a") is None


async def test_a_dead_gateways_clients_are_forgotten(redis: Redis, names: Names) -> None:
    gateways = Liveness(redis, names, "gateway")
    await gateways.heartbeat("gw-dead", TTL, register=True)
    await gateways.heartbeat("gw-live", 30, register=True)
    dead, live = Presence(redis, names, "gw-dead"), Presence(redis, names, "gw-live")
    for presence in (dead, live):
        await presence.joined("c1", "alice")
    await dead.joined("c2", "bob")
    await dead.joined("c2", "bob")
    await wait_until_expired(gateways, "gw-dead")
    assert await gateways.expired() == ["gw-dead"]  # roles do not see each other
    assert await Liveness(redis, names, "worker").expired() == []
    assert await gateways.forget("gw-dead") == 2
    assert await redis.hgetall(names.clients("c1")) == {b"gw-live": b"1"}
    assert await redis.hgetall(names.clients("c2")) == {}
    assert await redis.hgetall(names.connections("alice")) == {b"gw-live": b"1"}
    assert await redis.hgetall(names.connections("bob")) == {}


async def test_presence_counts_joins_and_leaves(redis: Redis, names: Names) -> None:
    presence = Presence(redis, names, "gw")
    await presence.joined("c1", "alice")
    await presence.joined("c1", "alice")
    await presence.left("c1", "alice")
    assert await redis.hgetall(names.clients("c1")) == {b"gw": b"1"}
    await presence.left("c1", "alice")
    assert await redis.hgetall(names.clients("c1")) == {}
    assert await redis.hgetall(names.connections("alice")) == {}
    assert await redis.hgetall(names.gateway_index("gw", 0)) == {}


async def test_a_user_is_held_to_its_connections_across_gateways(
    redis: Redis, names: Names
) -> None:
    one, two = Presence(redis, names, "gw-1", limit=3), Presence(redis, names, "gw-2", limit=3)
    assert [await one.joined("c1", "alice"), await two.joined("c2", "alice")] == [True, True]
    assert await one.joined("c1", "alice")
    assert not await two.joined("c3", "alice")  # a fourth, on any gateway
    assert await two.joined("c3", "bob")  # others are not affected
    assert await one.joined("c1", "alice", enforce=False)  # a gateway recounting its own
    await one.left("c1", "alice")
    await one.left("c1", "alice")
    assert await two.joined("c3", "alice")


async def test_a_process_is_forgotten_in_every_group_group_0_last(
    redis: Redis, namespace: str
) -> None:
    """Keys spread over groups: the dead are found in group 0 and forgotten everywhere;
    one still alive in another group keeps its group 0 copy, to be found again."""
    names = Names(namespace, groups=4)
    workers = Liveness(redis, names, "worker")
    await workers.heartbeat("worker-a", TTL, register=True)
    for group in names.all_groups:
        await redis.sadd(names.owns("worker-a", group), f"c{group}")
    await wait_until_expired(workers, "worker-a")
    await redis.set(names.alive("worker", "worker-a", 2), "1")  # alive there, a moment

    assert await workers.forget("worker-a") == -1
    assert await workers.expired() == ["worker-a"]  # still found in group 0
    await redis.delete(names.alive("worker", "worker-a", 2))
    assert await workers.forget("worker-a") == 4 - 2  # groups 1 and 3 went the first time
    assert await workers.expired() == []
    assert not any([await redis.exists(names.owns("worker-a", g)) for g in names.all_groups])
    assert await redis.zcard(names.pending(0)) == 1  # group 0's conversation is owed an owner
