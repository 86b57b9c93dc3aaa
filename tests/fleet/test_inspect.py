"""``fleet inspect`` against a real fleet: record, owner, epoch, queue, clients, events."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis

from broker.names import Names, parse_lease
from broker.redis import text
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.fleet.test_status import run_fleet
from tests.support import Client, create_conversation, http, replied_to, status_becomes, token


async def inspect_json(settings: Settings, cid: str, *args: str) -> dict[str, Any]:
    result = await run_fleet(settings, "inspect", cid, "--json", *args)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = orjson.loads(result.stdout)
    return found


async def test_inspect_shows_owner_epoch_clients_and_last_events(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    gateway = await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    ack = await client.act("hello")
    await client.wait_for(replied_to(ack["action_id"]))
    _, epoch = parse_lease(text(await redis.get(names.lease(cid)) or b""))

    found = await inspect_json(settings, cid, "--events", "2")
    assert found["record"]["user"] == "alice" and found["record"]["status"] == "running"
    assert found["owner"] == {"worker_id": worker.worker_id, "epoch": epoch, "alive": True}
    assert found["epoch"] == epoch
    assert found["queue_depth"] == 0
    assert found["clients"] == {"total": 1, "by_gateway": {gateway.gateway_id: 1}}
    assert found["events"] == len(client.events)
    assert found["last_events"] == client.events[-2:]
    shown = (await run_fleet(settings, "inspect", cid)).stdout
    assert f"owner: {worker.worker_id} (alive), epoch {epoch}" in shown
    assert f"clients: 1 ({gateway.gateway_id}: 1)" in shown
    assert f"events: {len(client.events)}, the last {len(client.events)}:" in shown
    await client.close()


async def test_inspect_shows_input_waiting_for_an_owner(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)  # no worker: nobody claims it
    async with http(fleet.url, bearer) as api:
        for word in ("one", "two"):
            body = {"kind": "message", "data": {"content": word}}
            response = await api.post(f"/api/conversations/{cid}/actions", json=body)
            assert response.status_code == 200, response.text

    found = await inspect_json(settings, cid)
    assert found["owner"] is None and found["epoch"] is None
    assert found["queue_depth"] == 2
    assert found["pending_since"] is not None
    assert found["record"]["status"] == "idle"
    shown = (await run_fleet(settings, "inspect", cid)).stdout
    assert "owner: none" in shown and "queue: 2 message(s) waiting" in shown

    await fleet.start_worker()  # inspecting changed nothing: the input is answered
    await status_becomes(redis, names, cid, "running")
    async with asyncio.timeout(10):
        while (await inspect_json(settings, cid))["queue_depth"] != 0:
            await asyncio.sleep(0.05)


async def test_inspecting_what_does_not_exist_is_one_line(settings: Settings) -> None:
    unknown = await run_fleet(settings, "inspect", "nope")
    assert unknown.returncode == 1
    assert (
        unknown.stderr
        == f"fleet inspect: no conversation nope in namespace {settings.namespace!r}\n"
    )
    bad = await run_fleet(settings, "inspect", "../etc")
    assert (bad.returncode, bad.stderr) == (1, "fleet inspect: '../etc' is not a conversation id\n")
