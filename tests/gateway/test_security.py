"""Tokens, rate limits and secrets: refused clearly, nothing else changes, nothing leaks."""

from __future__ import annotations

import asyncio
import base64

import jwt
import orjson
import pytest
import socketio

from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, token


def forged_tokens(settings: Settings) -> dict[str, str]:
    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    return {
        "other secret": jwt.encode({"sub": "alice"}, "not-the-secret-" + "y" * 32, "HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'alice'})}.",
        "expired": token(settings, "alice", ttl=-60),
        "no subject": jwt.encode({"x": 1}, settings.require_jwt_secret(), "HS256"),
        "no expiry": jwt.encode({"sub": "alice"}, settings.require_jwt_secret(), "HS256"),
        "garbage": "a.b.c",
    }


async def test_forged_expired_and_unsigned_tokens_are_refused_everywhere(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    cid = await create_conversation(fleet.url, token(settings, "alice"))
    for name, bad in forged_tokens(settings).items():
        async with http(fleet.url, bad) as client:
            listed = await client.get("/api/conversations")
            created = await client.post("/api/conversations", json={})
            read = await client.get(f"/api/conversations/{cid}/events")
        for response in (listed, created, read):
            assert response.status_code == 401, name
            assert response.json()["error"]["code"] == "unauthorized", name
        sio = socketio.AsyncClient(reconnection=False)
        errors: list[object] = []
        sio.on("connect_error", errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(
                fleet.url, auth={"token": bad, "conversation_id": cid}, transports=["websocket"]
            )
        assert errors and errors[0]["data"]["code"] == "unauthorized", name  # type: ignore[index]
    async with http(fleet.url, token(settings, "alice")) as client:
        assert (await client.get("/api/conversations")).json()["conversations"][0][
            "last_event_id"
        ] == -1


async def test_actions_beyond_the_rate_limit_are_refused_and_the_connection_stays_usable(
    fleet: InProcessFleet, settings: Settings
) -> None:
    # A burst of four: the conversation's creation, then three actions.
    fleet.settings = settings.model_copy(update={"rate_limit": 5.0, "rate_burst": 4})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    acks = [await client.act(f"m{i}", action_id=f"m{i}") for i in range(6)]

    assert [a["ok"] for a in acks[:3]] == [True, True, True]
    limited = [a for a in acks[3:] if not a["ok"]]
    assert limited and {a["error"]["code"] for a in limited} == {"rate_limited"}
    await asyncio.sleep(0.5)  # the property under test: the bucket refills with time
    assert (await client.act("later", action_id="later"))["ok"]
    accepted = [a["action_id"] for a in acks if a["ok"]] + ["later"]
    events = await client.wait_for(lambda ev: len(ev) >= 4 * len(accepted))
    users = [e["data"]["action_id"] for e in events if e["source"] == "user"]
    assert users == accepted
    await client.close()


async def test_no_token_or_secret_appears_in_any_log_line(settings: Settings) -> None:
    """Real processes, logging as configured in production but at DEBUG."""
    secret = settings.require_jwt_secret()
    bearer = token(settings, "alice")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, FLEET_LOG_LEVEL="DEBUG") as fleet:
        await fleet.gateway(port)
        await fleet.worker()
        cid = await create_conversation(url, bearer, initial="hi")
        client = await Client().connect(url, bearer, cid)
        await client.wait_for(lambda ev: len(ev) >= 4)
        await client.close()
        for bad in forged_tokens(settings).values():
            async with http(url, bad) as api:
                await api.get("/api/conversations")
            sio = socketio.AsyncClient(reconnection=False)
            query = f"{url}?token={bad}&conversation_id={cid}"
            with pytest.raises(socketio.exceptions.ConnectionError):
                await sio.connect(query, transports=["websocket"])
    lines = [line for process in fleet.processes for line in process.raw]

    assert sum("connect_refused" in line for line in lines) == len(forged_tokens(settings))
    secrets_ = [secret, bearer, *forged_tokens(settings).values()]
    assert [line for line in lines if any(s in line for s in secrets_)] == []
