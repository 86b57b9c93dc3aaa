"""The lease scripts on the real Redis: claim, refusal, takeover, fencing, release."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from broker.errors import LeaseLost
from broker.events import Action, NewEvent
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names, lease_value
from broker.ratelimit import Rate
from broker.store import Limits, Store

TTL = 0.3
LIMIT = 100
LIMITS = Limits(LIMIT, "reject", Rate(1000.0, 1000))


@pytest.fixture
def leases(redis: Redis, names: Names) -> Leases:
    return Leases(redis, names)


@pytest.fixture
def store(redis: Redis, names: Names) -> Store:
    return Store(redis, names)


async def created(store: Store, user: str = "alice") -> str:
    cid = uuid.uuid4().hex
    admission = await store.create(cid, user, LIMITS, "enqueue")
    assert admission.outcome == "ok"
    return cid


@pytest.fixture
def workers(redis: Redis, names: Names) -> Liveness:
    return Liveness(redis, names, "worker")


async def live_worker(workers: Liveness, worker_id: str, ttl: float = 30) -> str:
    assert await workers.heartbeat(worker_id, ttl, register=True)
    return worker_id


async def wait_until_dead(workers: Liveness, worker_id: str) -> None:
    """Poll (with a deadline) until the reaper's index reports the worker dead."""
    async with asyncio.timeout(5):
        while worker_id not in await workers.expired():
            await asyncio.sleep(0.02)


async def test_claim_then_second_claim_is_refused(
    leases: Leases, store: Store, workers: Liveness
) -> None:
    cid = await created(store)
    a = await live_worker(workers, "worker-a")
    b = await live_worker(workers, "worker-b")

    first = await leases.claim(cid, a, LIMIT)
    second = await leases.claim(cid, b, LIMIT)

    assert (first.outcome, second.outcome) == ("claimed", "busy")
    assert second.epoch == first.epoch
    assert (await leases.claim(cid, a, LIMIT)).outcome == "owned"
    assert await leases.owned_by(a) == [cid]
    assert await leases.owned_by(b) == []
    record = await store.get(cid)
    assert record is not None and record.owner == a and record.status == "running"


async def test_takeover_of_a_dead_owner_bumps_the_epoch(
    leases: Leases, store: Store, workers: Liveness
) -> None:
    cid = await created(store)
    a = await live_worker(workers, "worker-a", ttl=TTL)
    b = await live_worker(workers, "worker-b")
    first = await leases.claim(cid, a, LIMIT)

    await wait_until_dead(workers, a)
    takeover = await leases.claim(cid, b, LIMIT)

    assert (takeover.outcome, takeover.took_over) == ("claimed", True)
    assert takeover.epoch > first.epoch
    assert await leases.owned_by(a) == []
    assert await leases.owned_by(b) == [cid]


async def test_a_write_with_the_old_epoch_is_refused(
    leases: Leases, store: Store, workers: Liveness
) -> None:
    cid = await created(store)
    a = await live_worker(workers, "worker-a", ttl=TTL)
    b = await live_worker(workers, "worker-b")
    old = lease_value(a, (await leases.claim(cid, a, LIMIT)).epoch)
    await store.append(cid, old, [NewEvent("agent", "message", {"content": "before"}).body(cid)])

    await wait_until_dead(workers, a)
    new = await leases.claim(cid, b, LIMIT)
    with pytest.raises(LeaseLost):
        await store.append(cid, old, [NewEvent("agent", "message", {"content": "stale"}).body(cid)])
    await store.append(
        cid,
        lease_value(b, new.epoch),
        [NewEvent("agent", "message", {"content": "after"}).body(cid)],
    )

    logged = [e for e in await store.read(cid)]
    assert [b'"before"' in logged[0], b'"after"' in logged[1]] == [True, True]
    assert len(logged) == 2


async def test_claims_refused_for_unknown_and_by_a_lapsed_worker(
    leases: Leases, store: Store
) -> None:
    cid = await created(store)
    assert (await leases.claim("nope", "worker-a", LIMIT)).outcome == "unknown"
    assert (await leases.claim(cid, "never-registered", LIMIT)).outcome == "not_alive"


async def test_release_is_compare_and_delete(
    leases: Leases, store: Store, workers: Liveness
) -> None:
    cid = await created(store)
    a = await live_worker(workers, "worker-a")
    claim = await leases.claim(cid, a, LIMIT)

    assert not await leases.release(cid, a, claim.epoch + 1)
    assert await leases.release(cid, a, claim.epoch)
    assert not await leases.release(cid, a, claim.epoch)
    assert await leases.owned_by(a) == []
    admission = await store.admit(cid, "alice", LIMITS, Action("a-1", "message", "hi"), 10)
    assert (admission.outcome, admission.needs_owner) == ("ok", True)
    again = await leases.claim(cid, a, LIMIT)
    assert again.outcome == "claimed"
    assert again.epoch > claim.epoch


async def test_epochs_grow_even_when_redis_lost_the_latest(
    leases: Leases, store: Store, workers: Liveness, redis: Redis, names: Names
) -> None:
    """A Redis restarted from an older snapshot has an older epoch counter: the next
    claim must still get a greater epoch than any handed out before."""
    cid = await created(store)
    a = await live_worker(workers, "worker-a")
    first = await leases.claim(cid, a, LIMIT)
    assert await leases.release(cid, a, first.epoch)
    await redis.set(names.epoch(cid), 0)  # the counter as an old snapshot had it
    async with asyncio.timeout(5):  # a restart takes longer than a millisecond
        while (lambda t: t[0] * 1000 + t[1] // 1000)(await redis.time()) <= first.epoch:
            await asyncio.sleep(0.001)

    again = await leases.claim(cid, a, LIMIT)

    assert again.outcome == "claimed"
    assert again.epoch > first.epoch
