"""Claim requests that must not succeed, delivered to a real worker through the dispatch
queue: the claim script refuses them itself, whatever the request's sender believed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.leases import Claim, Leases
from broker.liveness import Liveness
from broker.names import Names
from broker.ratelimit import Rate
from broker.settings import Settings
from broker.store import Limits, Store
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    create_conversation,
    http,
    owned,
    replied_to,
    status_becomes,
    token,
)
from workers.worker import Worker

Claims = dict[str, list[Claim]]


def record_claims(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Claims:
    """Every claim the worker makes from now on, by conversation, with its outcome."""
    made: Claims = {}
    claim = worker.leases.claim

    async def recorded(cid: str, worker_id: str, user_limit: int) -> Claim:
        outcome = await claim(cid, worker_id, user_limit)
        made.setdefault(cid, []).append(outcome)
        return outcome

    monkeypatch.setattr(worker.leases, "claim", recorded)
    return made


async def next_claim(made: Claims, cid: str, before: int = 0) -> Claim:
    """Wait (with a deadline) for the worker's claim of ``cid`` after its first ``before``."""
    async with asyncio.timeout(10):
        while len(made.get(cid, ())) <= before:
            await asyncio.sleep(0.01)
    return made[cid][before]


async def live_worker(redis: Redis, names: Names, worker_id: str) -> str:
    assert await Liveness(redis, names, "worker").heartbeat(worker_id, 60, register=True)
    return worker_id


def claimed(logs: list[MutableMapping[str, Any]], cid: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "lease_claimed" and e.get("conversation_id") == cid]


async def test_a_stale_claim_request_over_the_users_limit_is_refused(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alice may run one conversation. Her first was passivated (its slot freed), her
    second took the slot; a claim request for the first, sent before, arrives now."""
    limits = Limits(1, "reject", Rate(1000.0, 1000))
    store, leases = Store(redis, names), Leases(redis, names)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert (await store.create(first, "alice", limits, "enqueue")).outcome == "ok"
    owner = await live_worker(redis, names, "earlier-owner")
    epoch = (await leases.claim(first, owner, 1)).epoch
    assert await leases.passivate(first, owner, epoch, idle=0, deleting=1) == "passivated"
    assert (await store.create(second, "alice", limits, "enqueue")).outcome == "ok"
    running = await redis.zrange(names.running("alice"), 0, -1)
    assert running == [second.encode()]

    worker = await fleet.start_worker(max_conversations_per_user=1)
    made = record_claims(worker, monkeypatch)
    with capture_logs() as logs:
        await worker.broker.request_claim(first, "input")
        claim = await next_claim(made, first)

    assert claim.outcome == "over_limit"
    assert await redis.zrange(names.running("alice"), 0, -1) == running
    assert await redis.get(names.lease(first)) is None
    assert await redis.hget(names.meta(first), "status") == b"idle"
    assert first not in worker.loops
    assert claimed(logs, first) == []


async def test_a_closed_conversation_is_never_claimed_again(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closed, and its queue deleted: a claim request that comes anyway (through the
    dispatch queue, or a second live worker claiming directly) changes nothing."""
    gateway = await fleet.start_gateway()
    worker = await fleet.start_worker()
    made = record_claims(worker, monkeypatch)
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    assert (await client.act("one", action_id="one"))["ok"]
    await client.wait_for(replied_to("one"))
    async with http(fleet.url, bearer) as api:
        assert (await api.delete(f"/api/conversations/{cid}")).status_code == 202
    await client.wait_for(lambda ev: bool(ev) and ev[-1]["kind"] == "closed")
    await status_becomes(redis, names, cid, "closed")
    async with asyncio.timeout(10):
        while cid in worker.loops or await gateway.broker.queue_depth(cid) is not None:
            await asyncio.sleep(0.02)
    epoch = await redis.get(names.epoch(cid))
    before = len(made.get(cid, ()))

    with capture_logs() as logs:
        await gateway.broker.request_claim(cid, "input")
        dispatched = await next_claim(made, cid, before)
        second = await live_worker(redis, names, "second-worker")
        direct = await Leases(redis, names).claim(cid, second, 100)

    assert (dispatched.outcome, direct.outcome) == ("closed", "closed")
    assert await redis.hget(names.meta(cid), "status") == b"closed"
    assert await redis.get(names.lease(cid)) is None
    assert await redis.get(names.epoch(cid)) == epoch
    assert await owned(redis, names, second) == set()
    assert cid not in worker.loops
    assert claimed(logs, cid) == []
    assert await gateway.broker.queue_depth(cid) is None  # not declared again
    await client.close()
