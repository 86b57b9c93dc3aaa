"""Client → gateway → RabbitMQ → worker → log → client, on the real servers."""

from __future__ import annotations

from typing import Any

from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token


def content_view(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["id"], e["source"], e["kind"], e["data"]) for e in events]


def reply(content: str, action_id: str) -> dict[str, object]:
    """The echo agent's answer: its turn has one step, 0."""
    return {"content": content, "in_reply_to": action_id, "turn_id": action_id, "step": 0}


async def test_echo_round_trip(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    first = await client.act("hello", action_id="a-1")
    await client.wait_for(lambda ev: len(ev) >= 4)
    second = await client.act("world", action_id="a-2")
    events = await client.wait_for(lambda ev: len(ev) >= 8)

    assert first == {"ok": True, "action_id": "a-1"}
    assert second == {"ok": True, "action_id": "a-2"}
    assert content_view(events) == [
        (0, "user", "message", {"content": "hello", "action_id": "a-1"}),
        (1, "agent", "state", {"state": "running", "turn_id": "a-1"}),
        (2, "agent", "message", reply("hello", "a-1")),
        (3, "agent", "state", {"state": "awaiting_user_input"}),
        (4, "user", "message", {"content": "world", "action_id": "a-2"}),
        (5, "agent", "state", {"state": "running", "turn_id": "a-2"}),
        (6, "agent", "message", reply("world", "a-2")),
        (7, "agent", "state", {"state": "awaiting_user_input"}),
    ]
    assert all(e["conversation_id"] == cid and isinstance(e["ts"], float) for e in events)
    await client.close()


async def test_initial_message_and_replay_after_latest_event_id(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="first words")
    watcher = await Client().connect(fleet.url, bearer, cid)
    await watcher.wait_for(lambda ev: len(ev) >= 4)
    await watcher.close()

    late = await Client().connect(fleet.url, bearer, cid, latest_event_id=1)
    events = await late.wait_for(lambda ev: len(ev) >= 2)

    assert [e["id"] for e in events] == [2, 3]
    assert events[0]["data"]["content"] == "first words"
    await late.close()


async def test_an_action_sent_before_any_worker_runs_is_answered_once_one_starts(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    assert (await client.act("waiting", action_id="early"))["ok"]

    await fleet.start_worker()
    events = await client.wait_for(lambda ev: len(ev) >= 4)

    assert events[2]["data"] == reply("waiting", "early")
    await client.close()
