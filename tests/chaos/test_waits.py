"""Waits that outlive processes: an approval asked before its owner is SIGKILLed or
drained is answered on the next owner; timers due while the reaper or every worker was
down fire once each when they are back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import (
    Client,
    EventList,
    answers,
    create_conversation,
    http,
    of_kind,
    replied_to,
    replies,
    token,
)


async def log_of(url: str, bearer: str, cid: str) -> EventList:
    async with http(url, bearer) as api:
        response = await api.get(f"/api/conversations/{cid}/events")
        events: EventList = response.json()["events"]
        return events


async def until_logged(
    url: str, bearer: str, cid: str, done: Callable[[EventList], bool], timeout: float = 20
) -> EventList:
    """Poll the log over HTTP (with a deadline) until ``done(events)`` holds."""
    async with asyncio.timeout(timeout):
        while not done(events := await log_of(url, bearer, cid)):
            await asyncio.sleep(0.1)
    return events


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "drain"])
async def test_an_approval_asked_before_its_owner_went_is_answered_by_the_next(
    settings: Settings, sig: signal.Signals
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        owner, _ = await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await client.act("/approve ship it", action_id="ship")
        events = await client.wait_for(lambda ev: bool(of_kind(ev, "approval_request")))
        request_id = of_kind(events, "approval_request")[0]["data"]["request_id"]
        await fleet.worker()

        owner.signal(sig)
        assert await owner.wait(20) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        ack = await client.approve(request_id, "yes", action_id="yes")
        events = await client.wait_for(replied_to("ship"), timeout=20)
        await client.close()

    assert ack == {"ok": True, "action_id": "yes"}
    assert replies(events) == {"ship": ["ship it"]}
    assert len(of_kind(events, "approval_request")) == 1
    assert len(of_kind(events, "approval")) == 1
    answer = next(e for e in events if e["data"].get("in_reply_to") == "ship")
    assert answer["data"]["step"] == 1  # after the request: step 0


async def test_timers_missed_while_the_reaper_was_down_fire_once_each(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.worker()
        bearer = token(settings, "alice")
        cids = [await create_conversation(url, bearer) for _ in range(3)]
        async with http(url, bearer) as api:
            for cid in cids:
                for i in range(5):
                    body = {"kind": "message", "data": {"content": f"/remind 0.5 r{i}"}}
                    assert (
                        await api.post(f"/api/conversations/{cid}/actions", json=body)
                    ).is_success
        scheduled = [
            await until_logged(url, bearer, cid, lambda ev: len(replies(ev)) == 5) for cid in cids
        ]
        due = max(e["ts"] for events in scheduled for e in events) + 0.5
        await asyncio.sleep(max(0.0, due - time.time()) + 1.0)  # the downtime: every timer is due
        assert await redis.zcard(names.due(names.group("alice"))) == 15
        for cid in cids:
            assert not of_kind(await log_of(url, bearer, cid), "timer")

        await fleet.reaper()
        logs = [
            await until_logged(url, bearer, cid, lambda ev: len(replies(ev)) == 10) for cid in cids
        ]
        assert await redis.zcard(names.due(names.group("alice"))) == 0

    for events in logs:
        timers = of_kind(events, "timer")
        assert sorted(t["data"]["payload"]["text"] for t in timers) == [f"r{i}" for i in range(5)]
        assert len({t["data"]["timer_id"] for t in timers}) == 5
        assert sorted(answers(events)) == sorted(["scheduled"] * 5 + [f"r{i}" for i in range(5)])


async def test_a_timer_due_while_no_worker_runs_fires_once_one_is_back(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        worker, _ = await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer, initial="/remind 1 ping")
        await until_logged(url, bearer, cid, lambda ev: len(replies(ev)) == 1)
        await worker.kill()
        async with asyncio.timeout(10):  # the reaper queues it, and finds no worker
            while await redis.zcard(names.due(names.group("alice"))):
                await asyncio.sleep(0.1)
        assert not of_kind(await log_of(url, bearer, cid), "timer")

        await fleet.worker()
        events = await until_logged(url, bearer, cid, lambda ev: len(replies(ev)) == 2)

    assert len(of_kind(events, "timer")) == 1
    assert answers(events) == ["scheduled", "ping"]
