"""The reaper's leader lease on the real Redis: one leader, a standby takes over."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from broker.leader import LeaderLease
from broker.names import Names


async def test_one_leader_at_a_time_and_a_standby_takes_over(redis: Redis, names: Names) -> None:
    first = LeaderLease(redis, names, "reaper-1", ttl=0.3)
    standby = LeaderLease(redis, names, "reaper-2", ttl=0.3)
    assert await first.hold()
    assert not await standby.hold()
    assert await first.hold()  # renewed
    async with asyncio.timeout(5):
        while not await standby.hold():  # the first stopped renewing
            await asyncio.sleep(0.05)
    assert not await first.hold()


async def test_resigning_hands_over_at_once(redis: Redis, names: Names) -> None:
    first = LeaderLease(redis, names, "reaper-1", ttl=30)
    standby = LeaderLease(redis, names, "reaper-2", ttl=30)
    assert await first.hold()
    await standby.resign()  # not the leader: changes nothing
    assert not await standby.hold()
    await first.resign()
    assert await standby.hold()
