"""Approvals seen from outside: the echo agent's ``/approve`` asks, the user answers
(once, with one of the options), and the wait survives a stop and passivation."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    EventList,
    create_conversation,
    http,
    of_kind,
    replied_to,
    replies,
    status_becomes,
    token,
)


def asked(events: EventList) -> bool:
    return bool(of_kind(events, "approval_request"))


def states(events: EventList) -> list[str]:
    return [e["data"]["state"] for e in of_kind(events, "state")]


async def started(fleet: InProcessFleet) -> tuple[str, Client]:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(fleet.settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    return cid, await Client().connect(fleet.url, bearer, cid)


async def test_an_approval_is_asked_then_answered(fleet: InProcessFleet) -> None:
    _, client = await started(fleet)
    await client.act("/approve launch the rocket", action_id="go")
    events = await client.wait_for(asked)
    request = of_kind(events, "approval_request")[0]["data"]
    assert request == {
        "request_id": request["request_id"],
        "prompt": "Approve: launch the rocket?",
        "options": ["yes", "no"],
        "turn_id": "go",
        "step": 0,
    }
    await client.wait_for(lambda ev: states(ev)[-1:] == ["awaiting_approval"])

    ack = await client.approve(request["request_id"], "yes", action_id="yes-1")
    events = await client.wait_for(replied_to("go"))

    assert ack == {"ok": True, "action_id": "yes-1"}
    assert replies(events) == {"go": ["launch the rocket"]}
    answer = of_kind(events, "approval")
    assert [e["data"] for e in answer] == [
        {"request_id": request["request_id"], "choice": "yes", "action_id": "yes-1"}
    ]
    assert answer[0]["source"] == "user"
    await client.wait_for(lambda ev: states(ev)[-1:] == ["awaiting_user_input"])
    assert states(client.events) == [
        "running",
        "awaiting_approval",
        "running",
        "awaiting_user_input",
    ]
    await client.close()


async def test_a_no_is_answered_denied(fleet: InProcessFleet) -> None:
    _, client = await started(fleet)
    await client.act("/approve delete everything", action_id="rm")
    request = of_kind(await client.wait_for(asked), "approval_request")[0]["data"]
    await client.approve(request["request_id"], "no")
    assert replies(await client.wait_for(replied_to("rm"))) == {"rm": ["denied"]}
    await client.close()


async def test_unknown_answered_and_invalid_answers_are_refused(
    fleet: InProcessFleet, settings: Settings
) -> None:
    cid, client = await started(fleet)
    await client.act("/approve once", action_id="once")
    request_id = of_kind(await client.wait_for(asked), "approval_request")[0]["data"]["request_id"]

    unknown = await client.approve("once:nope", "yes")
    bad_choice = await client.approve(request_id, "maybe")
    answered = await client.approve(request_id, "yes", action_id="first")
    again = await client.approve(request_id, "no", action_id="second")
    resent = await client.approve(request_id, "yes", action_id="first")  # a retry is fine
    async with http(fleet.url, token(settings, "alice")) as api:
        body = {"kind": "approval", "data": {"request_id": request_id, "choice": "yes"}}
        over_http = await api.post(f"/api/conversations/{cid}/actions", json=body)
        missing = await api.post(
            f"/api/conversations/{cid}/actions", json={"kind": "approval", "data": {}}
        )
    events = await client.wait_for(replied_to("once"))

    for refused in (unknown, bad_choice, again):
        assert refused["ok"] is False and refused["error"]["code"] == "bad_request", refused
    assert "answered" in unknown["error"]["message"]
    assert "options" in bad_choice["error"]["message"]
    assert answered == resent == {"ok": True, "action_id": "first"}
    assert over_http.status_code == 400 and over_http.json()["error"]["code"] == "bad_request"
    assert missing.status_code == 400
    assert "request_id" in missing.json()["error"]["message"]
    assert [e["data"]["action_id"] for e in of_kind(events, "approval")] == ["first"]
    assert replies(events) == {"once": ["once"]}
    await client.close()


async def test_a_stop_while_waiting_ends_the_turn_and_its_request(
    fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    cid, client = await started(fleet)
    await client.act("/approve later", action_id="later")
    request_id = of_kind(await client.wait_for(asked), "approval_request")[0]["data"]["request_id"]
    await client.stop(action_id="halt")
    events = await client.wait_for(lambda ev: bool(of_kind(ev, "turn_aborted")))
    late = await client.approve(request_id, "yes")
    await client.act("next", action_id="next")
    events = await client.wait_for(replied_to("next"))

    assert of_kind(events, "turn_aborted")[0]["data"] == {"turn_id": "later", "reason": "stopped"}
    assert late["ok"] is False and late["error"]["code"] == "bad_request"
    assert "later" not in replies(events)
    assert await redis.hlen(names.approvals(cid)) == 0
    await client.close()


async def test_waiting_for_an_answer_the_conversation_passivates_and_the_answer_resumes_it(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"passivate_after": 0.5, "publish_timeout": 2.0})
    cid, client = await started(fleet)
    await client.act("/approve after a nap", action_id="nap")
    request_id = of_kind(await client.wait_for(asked), "approval_request")[0]["data"]["request_id"]
    await client.close()
    await status_becomes(redis, names, cid, "idle")  # passivated while it waits
    assert await redis.get(names.lease(cid)) is None

    async with http(fleet.url, token(settings, "alice")) as api:
        body: dict[str, Any] = {
            "kind": "approval",
            "data": {"request_id": request_id, "choice": "yes"},
            "action_id": "wake",
        }
        response = await api.post(f"/api/conversations/{cid}/actions", json=body)
    assert response.status_code == 200, response.text
    client = await Client().connect(fleet.url, token(settings, "alice"), cid)
    events = await client.wait_for(lambda ev: states(ev)[-1:] == ["awaiting_user_input"])

    assert replies(events) == {"nap": ["after a nap"]}
    assert len(of_kind(events, "approval_request")) == 1
    assert states(events) == ["running", "awaiting_approval", "running", "awaiting_user_input"]
    await client.close()


async def test_messages_sent_while_waiting_are_answered_after_the_turn(
    fleet: InProcessFleet,
) -> None:
    _, client = await started(fleet)
    await client.act("/approve first", action_id="first")
    request_id = of_kind(await client.wait_for(asked), "approval_request")[0]["data"]["request_id"]
    await client.act("second", action_id="second")
    await client.approve(request_id, "yes")
    events = await client.wait_for(replied_to("second"))

    order = [e["data"]["in_reply_to"] for e in of_kind(events, "message") if e["source"] == "agent"]
    assert order == ["first", "second"]
    await client.close()
