"""What a gateway that died half way leaves behind is repaired: a conversation created
but never asked an owner, a close whose marker was lost, evictions under a burst.
Nothing stays holding a user's slot, nor stays closing forever."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import httpx
from aio_pika.exceptions import ChannelInvalidStateError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.amqp import Broker, Consumer
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names
from broker.ratelimit import Rate
from broker.settings import Settings
from broker.store import Limits, Store
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    answers,
    create_conversation,
    http,
    of_kind,
    replied_to,
    status_becomes,
    token,
)
from workers.worker import Worker

FAST = {"claim_retry_after": 0.3, "passivate_after": 0.5, "publish_timeout": 2.0}


async def half_made(settings: Settings, redis: Redis, user: str) -> str:
    """A conversation as a gateway that died right after admitting it leaves it: its
    queue declared and its record written, but no claim request sent."""
    names = settings.names
    broker = Broker(settings.amqp_url, names, name="dying-gateway")
    await broker.connect()
    try:
        cid = uuid.uuid4().hex
        await broker.declare_conversation(cid)
        limits = Limits(settings.max_conversations_per_user, "reject", Rate(100.0, 100))
        assert (await Store(redis, names).create(cid, user, limits, "enqueue")).outcome == "ok"
    finally:
        await broker.close()
    return cid


async def test_a_half_made_conversation_gets_an_owner_and_frees_its_slot(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={**FAST, "max_conversations_per_user": 1})
    await fleet.start_gateway()
    await fleet.start_worker()
    await fleet.start_reaper()
    cid = await half_made(fleet.settings, redis, "alice")
    bearer = token(settings, "alice")

    # The reaper asks for an owner again; the owner passivates it when idle.
    await status_becomes(redis, names, cid, "running")
    await status_becomes(redis, names, cid, "idle")
    assert await redis.zcard(names.running("alice")) == 0
    # It works like any other, and the user's slot is free for a new one.
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("are you there?")
    assert ack["ok"], ack
    await client.wait_for(replied_to(ack["action_id"]))
    await client.close()


async def test_a_close_whose_marker_was_lost_still_finishes(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    await fleet.start_reaper()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    # A gateway marked it closing, then died before queueing the close marker.
    assert await Store(redis, names).close(cid, "alice", "closed by user") == "idle"

    await fleet.start_worker()

    await status_becomes(redis, names, cid, "closed")
    client = await Client().connect(fleet.url, bearer, cid)
    events = await client.wait_for(lambda ev: bool(ev) and ev[-1]["kind"] == "closed")
    assert events[-1]["data"] == {"reason": "closed by user"}
    assert [e["kind"] for e in events].count("closed") == 1
    await client.close()


async def test_evictions_under_a_burst_all_finish(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(
        update={"max_conversations_per_user": 3, "over_limit_policy": "evict_oldest"}
    )
    second = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(second)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    urls = [fleet.url, f"http://127.0.0.1:{second}"]

    async def start(i: int) -> httpx.Response:
        async with http(urls[i % 2], bearer) as client:
            return await client.post("/api/conversations", json={"initial_message": f"hi {i}"})

    responses = await asyncio.gather(*(start(i) for i in range(30)))
    created = [r.json()["conversation_id"] for r in responses if r.status_code == 201]

    assert len(created) == 30
    async with asyncio.timeout(20):
        while True:
            statuses = [await redis.hget(names.meta(cid), "status") for cid in created]
            if statuses.count(b"closed") == 27:
                break
            await asyncio.sleep(0.1)
    assert b"closing" not in statuses
    assert await redis.zcard(names.running("alice")) == 3


async def test_a_failover_whose_claim_request_was_lost_still_gets_an_owner(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    """A worker dies owning a conversation with input queued; the claim request the
    reaper sends for it is lost. The reaper asks again: the input is answered."""
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    await fleet.start_reaper()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    # A worker that claims it, then stops beating (it died): its liveness lasts 1 s.
    ghost = Liveness(redis, names, "worker")
    await ghost.heartbeat("ghost", 1.0, register=True)
    claim = await Leases(redis, names).claim(cid, "ghost", settings.max_conversations_per_user)
    assert claim.outcome == "claimed"
    await purge_dispatch(settings, names)  # creation's request, taken by the ghost
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("still there?")
    assert ack["ok"], ack

    async with asyncio.timeout(10):  # the reaper re-dispatches, then forgets the ghost
        while await redis.zscore(names.deadlines("worker", 0), "ghost") is not None:
            await asyncio.sleep(0.05)
    await purge_dispatch(settings, names)  # the claim request is lost
    await fleet.start_worker()

    await client.wait_for(replied_to(ack["action_id"]))
    await client.close()


async def purge_dispatch(settings: Settings, names: Names) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.dispatch_queue, passive=True)
        await queue.purge()


async def test_a_worker_whose_claim_consumer_failed_to_restart_consumes_at_its_next_beat(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    """A worker is fenced (its liveness key vanished) and, as it rejoins, starting to
    consume claim requests again fails once (as when a channel closes under it): it
    does not stay deaf to them."""
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    consume = worker.broker.consume_claim_requests
    failures = 0

    async def fails_once(*args: Any) -> Consumer:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise ChannelInvalidStateError("the channel closed under the consumer")
        return await consume(*args)

    worker.broker.consume_claim_requests = fails_once  # type: ignore[method-assign,assignment]
    first_id = worker.worker_id
    await redis.delete(names.alive("worker", first_id, 0))
    async with asyncio.timeout(10):  # fenced, rejoined as a new incarnation
        while worker.worker_id == first_id or not worker.alive() or failures == 0:
            await asyncio.sleep(0.05)

    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("anyone?")
    assert ack["ok"], ack
    await client.wait_for(replied_to(ack["action_id"]))
    await client.close()


def reply_fails_once(
    worker: Worker, failed: list[str], also: Callable[[], None] = lambda: None
) -> None:
    """The worker's first append of a reply raises a Redis connection error (after
    ``also``), as if Redis went away for a moment."""
    append = worker.store.append

    async def failing(*args: Any) -> Any:
        _cid, _lease, _bodies, once, *_ = args
        if once.startswith("reply:") and "append" not in failed:
            failed.append("append")
            also()
            raise RedisConnectionError("Redis went away")
        return await append(*args)

    worker.store.append = failing  # type: ignore[method-assign,assignment]


def release_fails_once(
    worker: Worker, failed: list[str], before: Callable[[], Awaitable[None]] | None = None
) -> None:
    """The worker's first lease release raises a Redis connection error (after
    ``before``)."""
    release = worker.leases.release

    async def failing(*args: Any) -> bool:
        if "release" not in failed:
            failed.append("release")
            if before is not None:
                await before()
            raise RedisConnectionError("Redis went away")
        return await release(*args)

    worker.leases.release = failing  # type: ignore[method-assign,assignment]


async def hello_answered(fleet: InProcessFleet, settings: Settings) -> list[dict[str, Any]]:
    """A new conversation's client says hello; the events it got once answered."""
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("hello")
    assert ack["ok"], ack
    events = await client.wait_for(replied_to(ack["action_id"]))
    await client.close()
    return events


async def test_a_turn_cut_by_a_redis_error_resumes_even_when_handing_it_over_fails_once(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """Logging a turn's reply fails (Redis went away for a moment): that is not the
    agent's failure, so the turn is not failed but resumed; and handing the lease over
    for that fails once too, so it is tried again rather than left with no loop."""
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    failed: list[str] = []
    reply_fails_once(worker, failed)
    release_fails_once(worker, failed)
    events = await hello_answered(fleet, settings)
    assert failed == ["append", "release"]
    assert of_kind(events, "error") == []
    assert answers(events) == ["hello"]


async def test_a_lease_is_handed_over_though_liveness_is_in_doubt_as_its_loop_fails(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """A loop fails just as a heartbeat is late (our liveness in doubt for a moment,
    as after a long garbage collection): its lease is still handed over, not left held
    by a live worker with no loop to answer."""
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    failed: list[str] = []

    def liveness_lapses() -> None:
        worker.fencing.valid_until = 0.0  # until the next heartbeat confirms

    reply_fails_once(worker, failed, also=liveness_lapses)
    events = await hello_answered(fleet, settings)
    assert failed == ["append"]
    assert answers(events) == ["hello"]


async def test_a_lease_is_handed_over_though_the_worker_fenced_itself_meanwhile(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """A loop fails, and its worker fences itself before the hand-over gets through (a
    stall, as a long garbage collection makes): the old incarnation's lease is still
    handed over, so the conversation answers without waiting for a reaper."""
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    failed: list[str] = []
    reply_fails_once(worker, failed)
    release_fails_once(worker, failed, before=lambda: worker._fence("loop_stalled"))
    events = await hello_answered(fleet, settings)
    assert failed == ["append", "release"]
    assert answers(events) == ["hello"]
