"""The dashboard's API: the fleet as it is (workers, gateways, conversations) and any
conversation's log and streamed step, for admin tokens only: 401 without a token, 403
(saying nothing else) with a user's."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from broker.settings import Settings
from fleet.client import Conversation, TextUpdate
from tests.conftest import InProcessFleet
from tests.support import create_conversation, http, token

ADMIN_PATHS = (
    "/api/admin/fleet",
    "/api/admin/conversations/{cid}/events",
    "/api/admin/conversations/{cid}/stream",
)


async def test_admin_routes_refuse_everyone_else(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    alice = token(settings, "alice")
    cid = await create_conversation(fleet.url, alice, initial="secret plans")
    async with http(fleet.url) as anonymous, http(fleet.url, alice) as user:
        for path in (p.format(cid=cid) for p in ADMIN_PATHS):
            nobody = await anonymous.get(path)
            not_admin = await user.get(path)
            assert (nobody.status_code, nobody.json()["error"]["code"]) == (401, "unauthorized")
            assert (not_admin.status_code, not_admin.json()["error"]["code"]) == (403, "forbidden")
            assert cid not in not_admin.text and "secret" not in not_admin.text
        # A token saying admin but signed with another secret is no admin.
        forged = {"Authorization": f"Bearer {token(other_secret(settings), 'root', admin=True)}"}
        assert (await anonymous.get(ADMIN_PATHS[0], headers=forged)).status_code == 401


def other_secret(settings: Settings) -> Settings:
    return settings.model_copy(update={"jwt_secret": SecretStr("another-secret-" + "z" * 32)})


async def test_an_admin_sees_the_fleet_and_any_conversation_live(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.05})
    gateway = await fleet.start_gateway()
    worker = await fleet.start_worker()
    alice = token(settings, "alice")
    cid = await create_conversation(fleet.url, alice, initial="hi")
    async with (
        Conversation(fleet.url, alice, cid) as chat,
        http(fleet.url, token(settings, "root", admin=True)) as admin,
    ):
        await chat.reply_to((await chat.send("one two three four five six seven")).action_id)
        overview = (await admin.get("/api/admin/fleet")).json()
        events = (await admin.get(f"/api/admin/conversations/{cid}/events?after=3")).json()
        ack = await chat.send(" ".join(f"w{i}" for i in range(30)))
        async with asyncio.timeout(10):
            async for update in chat:
                text = isinstance(update, TextUpdate) and update.turn_id == ack.action_id
                if text and len(chat.text(ack.action_id)) > 10:
                    break
        streaming = (await admin.get(f"/api/admin/conversations/{cid}/stream")).json()["stream"]
        unknown = await admin.get("/api/admin/conversations/nope/events")

    [w] = overview["workers"]
    assert (w["id"], w["alive"], w["conversations"], w["shown"]) == (
        worker.worker_id,
        True,
        1,
        [cid],
    )
    assert 0 < w["ttl_ms"] <= settings.liveness_ttl * 1000
    [g] = overview["gateways"]
    assert (g["id"], g["alive"], g["connections"], g["shown"]) == (
        gateway.gateway_id,
        True,
        1,
        [cid],
    )
    [c] = overview["conversations"]
    assert (c["conversation_id"], c["user"], c["status"], c["owner"], c["clients"]) == (
        cid,
        "alice",
        "running",
        worker.worker_id,
        1,
    )
    assert c["epoch"] > 0 and c["last_event_id"] == 7 and c["pending_since"] is None
    assert [e["id"] for e in events["events"]] == [4, 5, 6, 7]
    assert streaming["turn_id"] == ack.action_id and streaming["delta"].startswith("w0 w1 ")
    assert unknown.status_code == 404
