"""A stop sent while the turn's owner is failing over still stops the turn, once it is
resumed elsewhere; nothing of the stopped turn is answered."""

from __future__ import annotations

import signal

from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import Client, create_conversation, replies, token

WORDS = " ".join(f"w{i}" for i in range(60))


async def test_a_stop_sent_during_failover_stops_the_resumed_turn(settings: Settings) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, FLEET_ECHO_DELAY="0.1") as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        owner, _ = await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await fleet.worker()
        await client.act(WORDS, action_id="long")
        await client.wait_for(lambda _: len(client.frames) >= 3)

        owner.signal(signal.SIGKILL)
        ack = await client.stop(action_id="halt")  # nobody runs the conversation now
        events = await client.wait_for(
            lambda ev: any(e["kind"] == "turn_aborted" for e in ev), timeout=20
        )
        await client.act("next", action_id="next")
        events = await client.wait_for(lambda ev: "next" in replies(ev))
        await client.close()

    assert ack == {"ok": True, "action_id": "halt"}
    aborted = next(e for e in events if e["kind"] == "turn_aborted")
    assert aborted["data"] == {"turn_id": "long", "reason": "stopped"}
    assert "long" not in replies(events)
    assert [e["data"]["action_id"] for e in events if e["kind"] == "stop"] == ["halt"]
    assert client.text.faults == []
