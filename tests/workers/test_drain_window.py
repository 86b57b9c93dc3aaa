"""A draining worker hands its conversations over ``DRAIN_WINDOW`` at a time, the next
ones as the new owner consumes those: the ones it has not handed over yet still answer.
With no worker taking any for ``HEIR_PATIENCE``, or after half its shutdown grace, it
releases the rest at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import answered, create_conversation, owned, owned_becomes, say, token
from workers import worker as worker_module
from workers.worker import Worker

COUNT = 6


@pytest.fixture(autouse=True)
def window_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two in transit at a time: with six conversations, the window has to move."""
    monkeypatch.setattr(worker_module, "DRAIN_WINDOW", 2)


async def owning(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names, **worker: Any
) -> tuple[Worker, list[str]]:
    """A gateway, and a worker that owns ``COUNT`` new conversations of alice's."""
    await fleet.start_gateway()
    drained = await fleet.start_worker(**worker)
    bearer = token(settings, "alice")
    cids = [await create_conversation(fleet.url, bearer, initial="hi") for _ in range(COUNT)]
    async with asyncio.timeout(10):
        while len(await owned(redis, names, drained.worker_id)) < COUNT:
            await asyncio.sleep(0.02)
    return drained, cids


async def exited(fleet: InProcessFleet) -> None:
    """Wait until the first worker started has drained and exited."""
    _, task = fleet.workers[0]
    await asyncio.wait_for(task, timeout=10)


async def answers(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names, cid: str
) -> None:
    await say(fleet.url, token(settings, "alice"), cid, "probe")
    await answered(redis, names, cid, "probe")


async def test_a_draining_worker_serves_what_it_has_not_handed_over_yet(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "HEIR_PATIENCE", 3.0)
    drained, cids = await owning(fleet, settings, redis, names)

    drained.stop()  # as SIGTERM; no other worker is up to claim what it releases
    async with asyncio.timeout(10):
        while len(kept := await owned(redis, names, drained.worker_id)) > COUNT - 2:
            await asyncio.sleep(0.01)
    assert len(kept) == COUNT - 2, "released more than its window"

    # One it has not handed over yet answers, from the draining worker.
    cid = sorted(kept)[0]
    await answers(fleet, settings, redis, names, cid)
    assert cid in await owned(redis, names, drained.worker_id)

    # Nobody claims: after its patience it releases the rest at once, and exits.
    await exited(fleet)
    assert not await owned(redis, names, drained.worker_id)

    heir = await fleet.start_worker()
    await owned_becomes(redis, names, heir.worker_id, set(cids))


async def test_a_draining_worker_moves_the_next_ones_as_the_heir_consumes(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "HEIR_PATIENCE", 60.0)  # never runs out here
    drained, cids = await owning(fleet, settings, redis, names, shutdown_grace=120.0)  # nor this
    heir = await fleet.start_worker()

    drained.stop()
    await exited(fleet)  # moved along by the heir consuming each
    assert await owned(redis, names, heir.worker_id) == set(cids)
    await answers(fleet, settings, redis, names, cids[-1])


async def test_a_drain_hurries_after_half_its_grace(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "HEIR_PATIENCE", 60.0)  # never runs out here
    drained, _ = await owning(fleet, settings, redis, names, shutdown_grace=2.0)

    drained.stop()  # nobody claims: only half the grace (1 s) sends the rest at once
    await exited(fleet)
    assert not await owned(redis, names, drained.worker_id)
