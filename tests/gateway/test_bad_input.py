"""Bad input gets a clear error and changes nothing else."""

from __future__ import annotations

from typing import Any

import pytest
import socketio

from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token


async def refused(url: str, auth: dict[str, Any]) -> Any:
    """The error data the server sent with its refusal."""
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    sio.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)
    assert len(errors) == 1 and errors[0]["message"] == errors[0]["data"]["message"]
    return errors[0]["data"]


async def test_connect_is_refused_without_a_valid_token_or_conversation(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    alice, bob = token(settings, "alice"), token(settings, "bob")
    cid = await create_conversation(fleet.url, alice)

    assert await refused(fleet.url, {"conversation_id": cid}) == {
        "code": "unauthorized",
        "message": "a token is required",
    }
    assert (await refused(fleet.url, {"token": "garbage", "conversation_id": cid}))["code"] == (
        "unauthorized"
    )
    expired = token(settings, "alice", ttl=-10)
    assert (await refused(fleet.url, {"token": expired, "conversation_id": cid}))["message"] == (
        "token expired"
    )
    unknown = {"token": alice, "conversation_id": "0" * 32}
    assert (await refused(fleet.url, unknown))["code"] == "not_found"
    other_users = {"token": bob, "conversation_id": cid}
    assert (await refused(fleet.url, other_users))["code"] == "not_found"
    bad_id = {"token": alice, "conversation_id": "../../etc"}
    assert (await refused(fleet.url, bad_id))["code"] == "not_found"
    bad_latest = {"token": alice, "conversation_id": cid, "latest_event_id": "soon"}
    assert (await refused(fleet.url, bad_latest))["code"] == "bad_request"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("just a string", "user_action must be an object"),
        (
            {"kind": "dance", "data": {"content": "x"}},
            "user_action.kind must be one of 'message', 'stop', 'approval'",
        ),
        ({"kind": "message", "data": {"content": 7}}, "user_action.data.content must be a string"),
        ({"kind": "message"}, "user_action.data.content must be a string"),
        (
            {"kind": "message", "data": {"content": "x"}, "action_id": "spaces not allowed"},
            "user_action.action_id must match ^[A-Za-z0-9_.:-]{1,128}$",
        ),
    ],
)
async def test_malformed_user_action_is_refused_and_the_connection_stays_usable(
    fleet: InProcessFleet, settings: Settings, payload: object, message: str
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    ack = await client.sio.call("user_action", payload, timeout=10)
    assert ack == {"ok": False, "error": {"code": "bad_request", "message": message}}

    assert (await client.act("still here", action_id="ok-1"))["ok"]
    events = await client.wait_for(lambda ev: len(ev) >= 4)
    assert [e["id"] for e in events] == [0, 1, 2, 3]
    assert events[0]["data"] == {"content": "still here", "action_id": "ok-1"}
    await client.close()


async def test_oversized_action_is_refused(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    ack = await client.act("x" * (settings.max_payload_bytes + 1))

    assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large"
    assert (await client.act("small"))["ok"]
    await client.close()
