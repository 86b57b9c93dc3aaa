"""The Python client against a real gateway and worker: history then live events, each
once; streamed text assembled; stop; refusals; a connection the gateway drops resumed
with no gap or duplicate; and the approval answer's exact shape on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio
import uvicorn

from broker.settings import Settings
from fleet.client import (
    ConnectionRefused,
    Conversation,
    Event,
    TextUpdate,
    Unreachable,
    Update,
    create_conversation,
)
from fleet.harness import free_port
from gateway.app import Gateway, Uvicorn
from tests.conftest import InProcessFleet
from tests.support import token

LONG = " ".join(f"w{i}" for i in range(30))


async def until_reply(chat: Conversation, action_id: str, timeout: float = 15) -> list[Update]:
    """Every update up to the end of ``action_id``'s turn."""
    seen: list[Update] = []
    async with asyncio.timeout(timeout):
        async for update in chat:
            seen.append(update)
            if isinstance(update, Event) and update.data.get("in_reply_to") == action_id:
                return seen
    raise AssertionError(f"the updates ended before the reply: {seen}")


def events_of(updates: list[Update]) -> list[Event]:
    return [u for u in updates if isinstance(u, Event)]


def streamed(updates: list[Update], turn_id: str) -> str:
    """The text an application shows of a turn's step 0, applying each update."""
    text = ""
    for u in updates:
        if isinstance(u, TextUpdate) and u.turn_id == turn_id:
            text = u.text if u.replaced else text + u.delta
    return text


async def test_history_then_live_each_once_with_the_streamed_text(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.01})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial_message="hello there")

    async with Conversation(fleet.url, bearer, cid) as chat:
        ack = await chat.send(LONG, action_id="a-1")
        assert ack.ok and ack.action_id == "a-1"
        updates = await until_reply(chat, "a-1")
        reply = await chat.reply_to("a-1")  # already arrived: answered at once

    events = events_of(updates)
    assert [e.id for e in events] == list(range(len(events)))
    for source in ("user", "agent"):
        messages = [e.data["content"] for e in events if (e.source, e.kind) == (source, "message")]
        assert messages == ["hello there", LONG]
    assert reply == events[-1] and reply.data["in_reply_to"] == "a-1"
    assert streamed(updates, "a-1") == LONG
    assert len([u for u in updates if isinstance(u, TextUpdate)]) > 2  # streamed, not only logged

    # From a later event id: only what comes after it.
    async with Conversation(fleet.url, bearer, cid, latest_event_id=3) as later:
        first = await anext(later)
    assert isinstance(first, Event) and first.id == 4


async def test_stop_ends_the_turn_and_reply_to_says_so(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.05})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    async with Conversation(fleet.url, bearer, cid) as chat:
        ack = await chat.send(LONG)
        async with asyncio.timeout(10):
            async for update in chat:
                if isinstance(update, TextUpdate):
                    break
        stopped = await chat.stop()
        ended = await chat.reply_to(ack.action_id, timeout=10)

    assert stopped.ok
    assert ended.kind == "turn_aborted"
    assert ended.data == {"turn_id": ack.action_id, "reason": "stopped"}


async def test_refusals_raise_with_the_protocols_code(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    cid = await create_conversation(fleet.url, token(settings, "alice"))

    with pytest.raises(ConnectionRefused) as bad_token:
        await Conversation(fleet.url, "not-a-token", cid).connect()
    with pytest.raises(ConnectionRefused) as not_yours:
        await Conversation(fleet.url, token(settings, "bob"), cid).connect()
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable) as unreachable:
        await Conversation(nobody, token(settings, "alice"), cid).connect()

    assert bad_token.value.code == "unauthorized"
    assert not_yours.value.code == "not_found"
    # python-socketio says "Connection error"; what aiohttp said is kept
    assert f"{nobody}: Connection error (ClientConnectorError: " in str(unreachable.value)


async def test_a_dropped_connection_resumes_with_no_gap_or_duplicate(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """The gateway disconnects the client mid-turn, twice; the client reconnects by
    itself: every event once, and the text streamed without a repeated character."""
    fleet.settings = settings.model_copy(update={"echo_delay": 0.03})
    gateway = await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    async with Conversation(fleet.url, bearer, cid) as chat:
        ack = await chat.send(LONG)
        updates: list[Update] = []
        async with asyncio.timeout(15):
            async for update in chat:
                updates.append(update)
                texts = [u for u in updates if isinstance(u, TextUpdate)]
                if len(texts) in (3, 6) and chat.connections == len(texts) // 3:
                    await drop_every_client(gateway)
                if isinstance(update, Event) and update.data.get("in_reply_to") == ack.action_id:
                    break
        connections = chat.connections

    assert connections == 3
    events = events_of(updates)
    assert [e.id for e in events] == list(range(len(events)))
    assert streamed(updates, ack.action_id) == LONG == events[-1].data["content"]


async def drop_every_client(gateway: Gateway) -> None:
    for sid in list(gateway.sockets._sessions):
        await gateway.sio.disconnect(sid)


@pytest.fixture
async def recording_server() -> AsyncIterator[tuple[str, list[Any]]]:
    """A bare Socket.IO server that accepts any client and records each ``user_action``,
    acknowledging it as a gateway does: the shape the client sends, seen as sent."""
    received: list[Any] = []
    sio = socketio.AsyncServer(async_mode="asgi")

    async def user_action(sid: str, payload: Any) -> dict[str, Any]:
        received.append(payload)
        return {"ok": True, "action_id": payload["action_id"]}

    sio.on("user_action", user_action)
    port = free_port()
    config = uvicorn.Config(socketio.ASGIApp(sio), port=port, log_config=None, lifespan="off")
    server = Uvicorn(config)
    serving = asyncio.create_task(server.serve())
    await asyncio.wait_for(server.listening.wait(), 10)
    yield f"http://127.0.0.1:{port}", received
    server.should_exit = True
    await serving


async def test_an_approval_answer_is_the_protocols_action(
    recording_server: tuple[str, list[Any]],
) -> None:
    url, received = recording_server
    async with Conversation(url, "token", "c-1") as chat:
        ack = await chat.answer_approval("r-7", "yes", action_id="ap-1")
        stop = await chat.stop(action_id="st-1")
    assert ack.ok and ack.action_id == "ap-1" and stop.ok
    assert received == [
        {"kind": "approval", "action_id": "ap-1", "data": {"request_id": "r-7", "choice": "yes"}},
        {"kind": "stop", "action_id": "st-1"},
    ]


async def test_an_approval_request_is_answered_through_the_client(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """The echo agent's ``/approve TEXT`` asks, with options yes and no; the answer
    sent by ``answer_approval`` lets the turn go on to answer TEXT."""
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    async with Conversation(fleet.url, bearer, cid) as chat:
        ack = await chat.send("/approve deploy")
        async with asyncio.timeout(10):
            request = await anext(
                u async for u in chat if isinstance(u, Event) and u.kind == "approval_request"
            )
        wrong = await chat.answer_approval(request.data["request_id"], "maybe")
        answered = await chat.answer_approval(request.data["request_id"], "yes")
        reply = await chat.reply_to(ack.action_id, timeout=10)

    assert request.data["options"] == ["yes", "no"]
    assert wrong.error is not None and wrong.error.code == "bad_request"
    assert answered.ok
    assert (reply.kind, reply.data["content"]) == ("message", "deploy")
