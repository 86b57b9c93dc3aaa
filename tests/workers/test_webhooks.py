"""Webhooks against real local HTTP receivers and a real fleet: signed bodies as the
protocol says, to FLEET_WEBHOOK_URL and to a callback_url; a receiver down for 10 s
under traffic misses nothing; retries run out into the dead letters that ``fleet
status`` counts; callback_url refused at create, and again at delivery."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.names import Names
from broker.settings import Settings
from fleet.status import show_status
from tests.conftest import InProcessFleet
from tests.receiver import (
    SECRET,
    Receivers,
    event_ids,
    everything_delivered,
    logged_states,
)
from tests.support import Client, create_conversation, http, replied_to, status_becomes, token
from tests.traffic import Sender, settle


def with_webhooks(settings: Settings, url: str | None = None, **update: Any) -> Settings:
    """Webhooks on (retried at least twice a second), private receivers allowed."""
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET),
            "webhook_url": url,
            "webhook_allow_private": True,
            "webhook_retry_cap": 0.5,
            **update,
        }
    )


async def create(url: str, bearer: str, **body: Any) -> str:
    async with http(url, bearer) as client:
        response = await client.post("/api/conversations", json=body)
    assert response.status_code == 201, response.text
    cid: str = response.json()["conversation_id"]
    return cid


async def test_state_changes_are_posted_signed_to_the_fleet_url_and_the_callback_url(
    receivers: Receivers, fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    operator, callback = await receivers(), await receivers()
    fleet.settings = with_webhooks(settings, operator.url)
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create(fleet.url, bearer, callback_url=callback.url)
    plain = await create_conversation(fleet.url, bearer)  # FLEET_WEBHOOK_URL only
    client = await Client().connect(fleet.url, bearer, cid)

    assert (await client.act("hello", action_id="t-1"))["ok"]
    events = await client.wait_for(replied_to("t-1"))
    other = await Client().connect(fleet.url, bearer, plain)
    assert (await other.act("hi", action_id="t-2"))["ok"]
    await other.wait_for(replied_to("t-2"))

    states = await logged_states(redis, names, cid)
    shown = [e for e in events if e["kind"] == "state"]
    assert [e["data"] for e in shown] == [
        {"state": "running", "turn_id": "t-1"},
        {"state": "awaiting_user_input"},
    ]
    for receiver, target in ((operator, "fleet"), (callback, "callback")):
        got = await receiver.wait_for(lambda got: len(event_ids(got, cid)) >= 2)
        mine = [r for r in got if r.json()["conversation_id"] == cid]
        assert [r.json() for r in mine] == [
            {
                "delivery_id": f"{cid}:{event['id']}:{target}",
                "conversation_id": cid,
                "user": "alice",
                "event": event,  # exactly as the client saw it
            }
            for event in shown
        ]
        for request, logged in zip(mine, states, strict=True):
            assert orjson.dumps(request.json()["event"]) == logged  # byte for byte
            assert request.signed_with(SECRET)
            assert request.headers["content-type"] == "application/json"
            assert request.path == "/hooks"
        assert not any(r.signed_with("another secret") for r in mine)
    # The conversation without a callback_url went to the operator's URL only.
    await operator.wait_for(lambda got: len(event_ids(got, plain)) >= 2)
    assert event_ids(callback.requests, plain) == []
    await asyncio.gather(client.close(), other.close())


async def test_a_receiver_down_for_10s_under_traffic_misses_nothing(
    receivers: Receivers, fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    receiver = await receivers()
    fleet.settings = with_webhooks(settings, receiver.url)
    await fleet.start_gateway()
    await fleet.start_worker()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    senders = []
    for _ in range(4):
        cid = await create_conversation(fleet.url, bearer)
        senders.append(Sender(cid, await Client().connect(fleet.url, bearer, cid)))
    cids = [s.cid for s in senders]
    stop = asyncio.Event()
    traffic = [asyncio.create_task(s.run(stop, interval=0.3)) for s in senders]
    await receiver.wait_for(lambda got: all(len(event_ids(got, c)) >= 2 for c in cids))

    await receiver.stop()
    before = len(receiver.requests), sum(len(s.acked) for s in senders)
    await asyncio.sleep(10)  # the outage itself, under traffic
    during = len(receiver.requests), sum(len(s.acked) for s in senders)
    await receiver.start()
    stop.set()
    await asyncio.gather(*traffic)
    await settle(senders)

    assert during[0] == before[0]  # it really was down
    assert during[1] - before[1] >= 4 * 10  # while the conversations went on
    await everything_delivered(receiver, redis, names, cids, timeout=20)
    await asyncio.gather(*(s.client.close() for s in senders))


async def test_deliveries_out_of_retries_are_dead_lettered_and_counted_by_fleet_status(
    receivers: Receivers,
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver = await receivers(status=500)
    fleet.settings = with_webhooks(settings, receiver.url, webhook_retry_for=1.5)
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    with capture_logs() as logs:
        assert (await client.act("doomed", action_id="t-1"))["ok"]
        await client.wait_for(replied_to("t-1"))
        async with asyncio.timeout(10):
            while len([e for e in logs if e["event"] == "webhook_dead_lettered"]) < 2:
                await asyncio.sleep(0.05)
    dead = [e for e in logs if e["event"] == "webhook_dead_lettered"]
    assert {(e["reason"], e["error"]) for e in dead} == {("expired", "HTTP 500")}
    states = await logged_states(redis, names, cid)
    doomed = [f"{cid}:{orjson.loads(state)['id']}:fleet" for state in states]
    assert [e["delivery_id"] for e in dead] == doomed  # in order, each given up on once
    attempts = [r.json()["delivery_id"] for r in receiver.requests]
    assert attempts.count(dead[0]["delivery_id"]) >= 2  # retried before giving up

    assert await show_status(settings) == 0
    out = capsys.readouterr().out
    assert "webhooks: 0 delivery(ies) waiting" in out
    assert "dead letters: 2" in out

    # The receiver is back: what comes next is delivered, behind the dead letters.
    receiver.status = 200
    assert (await client.act("fine", action_id="t-2"))["ok"]
    await client.wait_for(replied_to("t-2"))
    got = await receiver.wait_for(lambda got: len(got) >= 2)
    states = await logged_states(redis, names, cid)
    assert [r.json()["event"]["id"] for r in got] == [orjson.loads(s)["id"] for s in states[2:]]
    await client.close()


@pytest.mark.parametrize(
    ("callback_url", "says"),
    [
        ("ftp://example.com/hook", "must be an http:// or https:// URL"),
        ("/relative/hook", "must be an http:// or https:// URL"),
        ("http:///no-host", "must name a host"),
        ("http://127.0.0.1:9/hook", "loopback, private or link-local address (127.0.0.1"),
        ("http://localhost:9/hook", "loopback, private or link-local address (localhost"),
        ("http://10.1.2.3/hook", "(10.1.2.3 resolves to 10.1.2.3)"),
        ("http://192.168.0.7/hook", "192.168.0.7"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://[::1]:9/hook", "::1"),
        ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1"),
        ("http://0.0.0.0/hook", "0.0.0.0"),
        (42, "callback_url must be a string"),
    ],
)
async def test_callback_url_must_be_http_and_public(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    callback_url: object,
    says: str,
) -> None:
    fleet.settings = with_webhooks(settings, webhook_allow_private=False)
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    async with http(fleet.url, bearer) as client:
        refused = await client.post("/api/conversations", json={"callback_url": callback_url})
        public = await client.post(
            "/api/conversations", json={"callback_url": "https://93.184.216.34/hook"}
        )
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "bad_request" and says in error["message"], error
    assert public.status_code == 201, public.text  # a public address is fine
    # Nothing is left of the refused one.
    assert await redis.zcard(names.user_conversations("alice")) == 1


async def test_callback_url_needs_a_fleet_that_signs_webhooks(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()  # no FLEET_WEBHOOK_SECRET
    async with http(fleet.url, token(settings, "alice")) as client:
        response = await client.post(
            "/api/conversations", json={"callback_url": "https://93.184.216.34/hook"}
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "bad_request",
        "message": "callback_url cannot be used: this fleet sends no webhooks",
    }


async def test_a_callback_url_now_private_is_not_called_but_dead_lettered(
    receivers: Receivers,
    fleet: InProcessFleet,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver = await receivers()
    # The gateway took it (as if its name resolved publicly then); the worker checks
    # again at delivery and finds a loopback address.
    fleet.settings = with_webhooks(settings)
    await fleet.start_gateway()
    await fleet.start_worker(webhook_allow_private=False)
    bearer = token(settings, "alice")
    cid = await create(fleet.url, bearer, callback_url=receiver.url)
    client = await Client().connect(fleet.url, bearer, cid)

    with capture_logs() as logs:
        assert (await client.act("hello", action_id="t-1"))["ok"]
        await client.wait_for(replied_to("t-1"))
        async with asyncio.timeout(10):
            while len([e for e in logs if e["event"] == "webhook_dead_lettered"]) < 2:
                await asyncio.sleep(0.05)
    dead = [e for e in logs if e["event"] == "webhook_dead_lettered"]
    assert {e["reason"] for e in dead} == {"address_refused"}
    assert "127.0.0.1" in dead[0]["error"]
    assert receiver.requests == []  # never called
    assert await show_status(settings) == 0
    assert "dead letters: 2" in capsys.readouterr().out
    await client.close()


async def test_a_conversation_passivated_then_closed_owes_no_webhook(
    receivers: Receivers, fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    receiver = await receivers()
    fleet.settings = with_webhooks(settings, receiver.url, passivate_after=0.5, publish_timeout=2.0)
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create(fleet.url, bearer, initial_message="hello")

    await status_becomes(redis, names, cid, "idle")  # answered, then passivated
    await everything_delivered(receiver, redis, names, [cid], timeout=10)
    async with http(fleet.url, bearer) as client:  # resumed, then closed for good
        assert (
            await client.post(
                f"/api/conversations/{cid}/actions",
                json={"kind": "message", "data": {"content": "again"}, "action_id": "t-2"},
            )
        ).status_code == 200
        assert (await client.delete(f"/api/conversations/{cid}")).status_code == 202
    await status_becomes(redis, names, cid, "closed")
    assert len(await logged_states(redis, names, cid)) == 4
    await everything_delivered(receiver, redis, names, [cid], timeout=10)
    assert (
        await redis.hget(names.meta(cid), "outboxed")
        == str(await redis.llen(names.log(cid)) - 1).encode()
    )  # relayed to the end
