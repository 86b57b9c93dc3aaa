"""A closed conversation stays closed, whatever is killed and restarted."""

from __future__ import annotations

import signal

from redis.asyncio import Redis

from broker.amqp import Broker
from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import Client, create_conversation, http, replies, status_becomes, token


async def test_close_for_good_survives_killing_and_restarting_everything(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        reaper = await fleet.reaper()
        workers = [await fleet.worker(), await fleet.worker()]
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        assert (await client.act("one", action_id="one"))["ok"]
        assert (await client.act("two", action_id="two"))["ok"]

        async with http(url, bearer) as api:
            assert (await api.delete(f"/api/conversations/{cid}")).status_code == 202
        events = await client.wait_for(lambda ev: bool(ev) and ev[-1]["kind"] == "closed")

        # Input queued before the close was answered first; `closed` is last.
        assert set(replies(events)) == {"one", "two"}
        assert events[-1]["data"] == {"reason": "closed by user"}
        refused = await client.act("three")
        assert refused == {
            "ok": False,
            "error": {"code": "conversation_closed", "message": "the conversation is closed"},
        }
        await status_becomes(redis, names, cid, "closed")
        await assert_queue_deleted(settings, cid)
        # Finishing the conversation (its queue deleted) is routine: nobody warns of it.
        assert fleet.warnings() == {}

        for process, _ in workers:
            process.signal(signal.SIGKILL)
        reaper.signal(signal.SIGKILL)
        await fleet.reaper()
        await fleet.worker()
        await fleet.worker()
        async with http(url, bearer) as api:
            again = await api.delete(f"/api/conversations/{cid}")
            record = (await api.get(f"/api/conversations/{cid}")).json()

        assert again.status_code == 202
        assert (record["status"], record["owner"]) == ("closed", None)
        assert record["last_event_id"] == events[-1]["id"]
        assert await redis.get(names.lease(cid)) is None
        await client.close()


async def assert_queue_deleted(settings: Settings, cid: str) -> None:
    broker = Broker(settings.amqp_url, settings.names, name="test")
    await broker.connect(declare=False)
    try:
        assert await broker.queue_depth(cid) is None
    finally:
        await broker.close()
