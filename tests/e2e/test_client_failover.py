"""The Python client behind two gateways (real processes): the one it is connected to is
killed (SIGKILL) mid-turn; the client goes on through the other by itself, with every
event once and the streamed text with no gap or repeat, and a message sent before it
noticed is queued and answered once."""

from __future__ import annotations

import asyncio

from broker.settings import Settings
from fleet.client import Conversation, Event, TextUpdate, Update, create_conversation
from fleet.harness import LocalFleet
from tests.support import http, token

LONG = " ".join(f"w{i}" for i in range(60))  # 3 s at 50 ms a word


async def test_the_client_resumes_on_the_other_gateway_with_no_gap_or_duplicate(
    settings: Settings,
) -> None:
    async with LocalFleet(settings, FLEET_ECHO_DELAY="0.05") as fleet:
        first, first_url = await fleet.gateway()
        _, second_url = await fleet.gateway()
        await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(first_url, bearer)

        async with Conversation([first_url, second_url], bearer, cid) as chat:
            ack = await chat.send(LONG)
            updates: list[Update] = []
            async with asyncio.timeout(20):
                async for update in chat:
                    updates.append(update)
                    if sum(isinstance(u, TextUpdate) for u in updates) == 5:
                        await first.kill()
                        shown_at_kill = chat.text(ack.action_id)
                        # Sent before the client noticed, or while it reconnects.
                        after = chat.send("after the kill", action_id="after-1")
                        sent_after = asyncio.ensure_future(after)
                    if isinstance(update, Event) and update.data.get("in_reply_to") == "after-1":
                        break
            assert (await sent_after).ok
            url, connections = chat.url, chat.connections

        async with http(second_url, bearer) as api:
            logged = (await api.get(f"/api/conversations/{cid}/events")).json()["events"]

    assert (url, connections) == (second_url, 2)
    events = [u for u in updates if isinstance(u, Event)]
    assert [e.id for e in events] == list(range(len(events)))  # no gap, no duplicate
    assert [(e.id, e.kind, e.data) for e in events] == [
        (e["id"], e["kind"], e["data"]) for e in logged[: len(events)]
    ]
    shown = ""
    for u in updates:
        if isinstance(u, TextUpdate) and u.turn_id == ack.action_id:
            shown = u.text if u.replaced else shown + u.delta
    answer = next(e for e in events if e.data.get("in_reply_to") == ack.action_id)
    assert shown == LONG == answer.data["content"]
    assert 0 < len(shown_at_kill) < len(LONG)  # killed mid-turn
    user_after = [e for e in events if e.source == "user" and e.data.get("action_id") == "after-1"]
    replies_after = [e for e in events if e.data.get("in_reply_to") == "after-1"]
    assert len(user_after) == len(replies_after) == 1
