"""``fleet conversations --stuck`` lists each kind of stuck conversation, and
``fleet close`` closes one for good, against real fleets."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from broker.amqp import Broker
from broker.liveness import Liveness
from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.conftest import InProcessFleet
from tests.fleet.test_status import run_fleet
from tests.support import Client, create_conversation, http, owned, replied_to, token


async def stuck(settings: Settings) -> list[dict[str, Any]]:
    result = await run_fleet(settings, "conversations", "--stuck", "--json")
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = orjson.loads(result.stdout)
    return found


async def test_each_kind_of_stuck_conversation_is_listed(
    settings: Settings, redis: Redis, names: Names
) -> None:
    settings = settings.model_copy(update={"max_log_events": 4, "stuck_after": 0.3})
    async with LocalFleet(settings) as fleet:
        _, url = await fleet.gateway()
        worker, worker_id = await fleet.worker()
        bearer = token(settings, "alice")
        full = await create_conversation(url, bearer, "hi")
        waiting, closing = [await create_conversation(url, bearer) for _ in range(2)]
        async with http(url, bearer) as api:
            async with asyncio.timeout(10):  # answered: 4 events, the cap
                while await redis.llen(names.log(full)) < 4:
                    await asyncio.sleep(0.05)
            async with asyncio.timeout(10):
                while len(await owned(redis, names, worker_id)) < 3:
                    await asyncio.sleep(0.05)
            message = {"kind": "message", "data": {"content": "more"}}
            refused = await api.post(f"/api/conversations/{full}/actions", json=message)
            assert refused.json()["error"]["code"] == "conversation_full"
            await worker.kill()
            await Liveness(redis, names, "worker").expire(worker_id)  # dead at once, not in a TTL
            assert (await api.delete(f"/api/conversations/{closing}")).status_code == 202
            queued = await api.post(f"/api/conversations/{waiting}/actions", json=message)
            assert queued.status_code == 200, queued.text

        async with asyncio.timeout(10):
            while len(found := await stuck(settings)) < 3:
                await asyncio.sleep(0.1)
        kinds = {s["conversation_id"]: s["kind"] for s in found}
        assert kinds == {full: "log_full", waiting: "no_owner", closing: "closing"}
        by_kind = {s["kind"]: s for s in found}
        assert by_kind["no_owner"]["detail"] == f"1 message(s) queued, owner {worker_id} is dead"
        assert by_kind["closing"]["status"] == "closing" and by_kind["closing"]["for_s"] >= 0.3
        assert by_kind["log_full"]["detail"].startswith("4 events")
        assert all(s["user"] == "alice" for s in found)

        shown = (await run_fleet(settings, "conversations", "--stuck")).stdout
        assert shown.startswith("3 stuck conversation(s)\n")
        assert f"no_owner  {waiting}  alice  running" in shown

        relaxed = settings.model_copy(update={"max_log_events": 100})
        assert [s["kind"] for s in await stuck(relaxed)] == ["closing", "no_owner"]
        await fleet.worker()  # a worker claims what is owed an owner: nothing is stuck
        async with asyncio.timeout(15):
            while await stuck(relaxed):
                await asyncio.sleep(0.1)


async def test_close_closes_for_good_with_the_reason(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("hi")
    await client.wait_for(replied_to(ack["action_id"]))

    result = await run_fleet(settings, "close", cid, "--reason", "spam", "--wait")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"closing {cid} (it was running)\n{cid} is closed\n"
    events = await client.wait_for(lambda ev: ev[-1]["kind"] == "closed")
    assert events[-1]["data"] == {"reason": "spam"}
    broker = Broker(settings.amqp_url, names, name="test")
    await broker.connect(declare=False)
    try:
        assert await broker.queue_depth(cid) is None  # its owner deleted the queue
    finally:
        await broker.close()
    again = await run_fleet(settings, "close", cid)
    assert (again.returncode, again.stdout) == (0, f"{cid} is closed already\n")
    unknown = await run_fleet(settings, "close", "nope")
    assert unknown.returncode == 1
    assert (
        unknown.stderr == f"fleet close: no conversation nope in namespace {settings.namespace!r}\n"
    )
    await client.close()
