"""Agent turns seen from outside: streamed text, a client joining mid-step through
another gateway, stop, and each policy for input while the agent is busy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.events import StreamFrame
from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import Client, EventList, create_conversation, http, replies, token

WORDS = " ".join(f"w{i}" for i in range(20))


def kinds(events: EventList) -> list[tuple[str, str]]:
    return [(e["source"], e["kind"]) for e in events]


def answer_of(events: EventList, turn_id: str) -> dict[str, Any]:
    """The data of the turn's last message."""
    return next(
        e["data"]
        for e in events
        if e["kind"] == "message" and e["data"].get("in_reply_to") == turn_id
    )


def has(kind: str, turn_id: str) -> Callable[[EventList], bool]:
    return lambda events: any(
        e["kind"] == kind and e["data"].get("turn_id") == turn_id for e in events
    )


async def two_gateways(fleet: InProcessFleet, settings: Settings, **update: Any) -> str:
    """A gateway on ``settings.port`` and another, a worker; the other gateway's URL."""
    fleet.settings = settings.model_copy(update=update)
    other = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(other)
    await fleet.start_worker()
    return f"http://127.0.0.1:{other}"


async def test_a_reply_streams_word_by_word_then_is_logged(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.08})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    await client.act("one two three four five", action_id="t-1")
    events = await client.wait_for(lambda ev: "t-1" in replies(ev))

    frames = client.frames
    # A frame a word; two words may share one if the machine is slow (coalescing).
    deltas = [f["delta"] for f in frames]
    assert "".join(deltas) == "one two three four five"
    assert all(d.strip() and not d.startswith(" ") for d in deltas), deltas
    assert len(frames) >= 3, deltas
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert {(f["turn_id"], f["step"], f["conversation_id"]) for f in frames} == {("t-1", 0, cid)}
    assert client.text.shown == {("t-1", 0): "one two three four five"}
    assert client.text.faults == []
    assert answer_of(events, "t-1")["content"] == "one two three four five"
    await client.close()


async def test_a_client_joining_mid_step_through_another_gateway_misses_nothing(
    fleet: InProcessFleet, settings: Settings
) -> None:
    other = await two_gateways(fleet, settings, echo_delay=0.06)
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    first = await Client().connect(fleet.url, bearer, cid)
    await first.act(WORDS, action_id="t-1")
    await first.wait_for(lambda _: len(first.frames) >= 5)

    late = await Client().connect(other, bearer, cid)
    events = await late.wait_for(lambda ev: "t-1" in replies(ev))

    joined = late.frames[0]
    # Frames of one epoch (a slow machine may see its owner fence itself and the turn
    # resume under a new one, which replaces what it streamed: checked by late.text).
    epoch = [f for f in late.frames if f["epoch"] == joined["epoch"]]
    before = [f for f in first.frames if f["epoch"] == joined["epoch"]]
    assert joined["seq"] >= 4  # one frame holding the whole text so far
    assert joined["delta"] == "".join(f["delta"] for f in before[: joined["seq"] + 1])
    assert [f["seq"] for f in epoch] == list(range(joined["seq"], joined["seq"] + len(epoch)))
    assert late.text.shown == {("t-1", 0): WORDS}
    assert late.text.faults == []
    assert kinds(events)[:2] == [("user", "message"), ("agent", "state")]  # logged first
    await first.close()
    await late.close()


async def test_fast_deltas_are_coalesced(fleet: InProcessFleet, settings: Settings) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.02})  # 50 deltas/s
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    snapshots = 0
    stream = worker.store.stream

    async def counted(cid: str, lease: str, frame: StreamFrame) -> bool:
        nonlocal snapshots
        snapshots += 1
        return await stream(cid, lease, frame)

    worker.store.stream = counted  # type: ignore[method-assign]
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    words = " ".join(str(i) for i in range(100))  # 2 s of streaming

    began = asyncio.get_running_loop().time()
    await client.act(words, action_id="fast")
    await client.wait_for(lambda ev: "fast" in replies(ev))
    seconds = asyncio.get_running_loop().time() - began

    assert client.text.shown == {("fast", 0): words}
    assert len(client.frames) <= 20 * seconds + 1  # at most one frame per 50 ms
    assert snapshots == len(client.frames)  # one small Redis write per frame
    assert len(client.frames) < 60  # far fewer than the 100 deltas
    await client.close()


async def test_a_stop_through_another_gateway_ends_the_running_turn(
    fleet: InProcessFleet, settings: Settings
) -> None:
    other = await two_gateways(fleet, settings, echo_delay=0.05)
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    watcher = await Client().connect(fleet.url, bearer, cid)
    stopper = await Client().connect(other, bearer, cid)
    await watcher.act(WORDS + " " + WORDS, action_id="long")
    await watcher.wait_for(lambda _: len(watcher.frames) >= 3)

    ack = await stopper.stop(action_id="halt")
    events = await watcher.wait_for(has("turn_aborted", "long"))
    await watcher.wait_for(lambda ev: ev[-1]["kind"] == "state")

    assert ack == {"ok": True, "action_id": "halt"}
    tail = events[-3:]
    assert tail[0]["source"] == "user" and tail[0]["kind"] == "stop"
    assert tail[0]["data"] == {"action_id": "halt"}
    assert tail[1]["data"] == {"turn_id": "long", "reason": "stopped"}
    assert tail[2]["data"] == {"state": "awaiting_user_input"}
    assert "long" not in replies(events)  # no answer to a stopped turn
    streamed = len(watcher.frames)
    # The conversation goes on: the next message is answered.
    await stopper.act("after", action_id="after")
    await watcher.wait_for(lambda ev: "after" in replies(ev))
    assert all(f["turn_id"] == "after" for f in watcher.frames[streamed:])
    await watcher.close()
    await stopper.close()


async def test_a_stop_with_no_turn_running_changes_nothing(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    await client.act("hi", action_id="hi")
    await client.wait_for(lambda ev: "hi" in replies(ev))

    assert (await client.stop(action_id="s"))["ok"]
    await client.act("again", action_id="again")
    events = await client.wait_for(lambda ev: "again" in replies(ev))

    stop = next(e for e in events if e["kind"] == "stop")
    assert stop["data"] == {"action_id": "s"}
    assert not any(e["kind"] == "turn_aborted" for e in events)
    assert events[stop["id"] + 1]["data"]["action_id"] == "again"
    await client.close()


async def test_a_disconnect_is_not_a_stop(fleet: InProcessFleet, settings: Settings) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.02})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    leaver = await Client().connect(fleet.url, bearer, cid)
    await leaver.act(WORDS, action_id="left")
    await leaver.wait_for(lambda _: len(leaver.frames) >= 2)
    await leaver.close()

    later = await Client().connect(fleet.url, bearer, cid)
    events = await later.wait_for(lambda ev: "left" in replies(ev))
    assert answer_of(events, "left")["content"] == WORDS
    await later.close()


@pytest.mark.parametrize("policy", ["enqueue", "reject", "interrupt", "steer"])
async def test_input_while_busy_through_two_gateways(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names, policy: str
) -> None:
    other = await two_gateways(fleet, settings, echo_delay=0.05)
    bearer = token(settings, "alice")
    async with http(fleet.url, bearer) as api:
        created = await api.post("/api/conversations", json={"on_busy": policy})
    cid = created.json()["conversation_id"]
    one = await Client().connect(fleet.url, bearer, cid)
    two = await Client().connect(other, bearer, cid)
    await one.act(WORDS, action_id="m1")
    await one.wait_for(lambda _: len(one.frames) >= 2)

    second = await two.act("m2 text", action_id="m2")  # while m1's turn runs
    if policy == "reject":
        assert second == {
            "ok": False,
            "error": {
                "code": "busy",
                "message": "the agent is busy with a turn; retry when it is done, or stop it",
            },
        }
    else:
        assert second["ok"], second

    expected = {
        "enqueue": ({"m1": [WORDS], "m2": ["m2 text"]}, []),
        "reject": ({"m1": [WORDS]}, []),
        "interrupt": ({"m2": ["m2 text"]}, ["m1"]),
        "steer": ({"m1": [WORDS + "\nm2 text"]}, []),
    }[policy]
    answered, aborted = expected
    last = "m1" if policy in ("reject", "steer") else "m2"
    events = await one.wait_for(lambda ev: last in replies(ev))
    await one.wait_for(lambda ev: ev[-1]["kind"] == "state")

    assert replies(events) == answered
    assert [e["data"]["turn_id"] for e in events if e["kind"] == "turn_aborted"] == aborted
    if aborted:
        assert answer_of(events, "m2")  # the interrupting message got its own turn
    if policy == "steer":
        steered = next(e for e in events if e["data"].get("action_id") == "m2")
        assert steered["data"]["steered_into"] == "m1"
        assert answer_of(events, "m1")["steered"] == ["m2"]
    # Every admitted action id logged once; the log is the same for both clients.
    users = [e["data"]["action_id"] for e in events if e["source"] == "user"]
    assert sorted(users) == (["m1"] if policy == "reject" else ["m1", "m2"])
    assert await two.wait_for(lambda ev: len(ev) >= len(events)) == events
    assert one.text.faults == two.text.faults == []
    await one.close()
    await two.close()


async def test_each_state_is_stamped_when_it_is_logged(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    await client.act("one", action_id="one")
    await client.wait_for(lambda ev: "one" in replies(ev))
    await client.act("two", action_id="two")
    events = await client.wait_for(
        lambda ev: [e["data"].get("state") for e in ev].count("awaiting_user_input") == 2
    )
    await client.close()

    idle = [e for e in events if e["data"].get("state") == "awaiting_user_input"]
    answers = [e for e in events if e["data"].get("in_reply_to")]
    assert [i["ts"] >= a["ts"] for i, a in zip(idle, answers, strict=True)] == [True, True]
    assert idle[1]["ts"] > idle[0]["ts"]
