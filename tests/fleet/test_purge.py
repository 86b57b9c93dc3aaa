"""``fleet purge`` deletes old closed and long-idle conversations (log, record, queue,
index entries) and nothing else, and never one that received input meanwhile."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from broker.amqp import Broker
from broker.events import Action
from broker.names import Names
from broker.redis import text
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.fleet.test_status import fleet_env, run_fleet
from tests.support import answered, create_conversation, http, status_becomes, token


async def keys(redis: Redis, names: Names) -> set[str]:
    """Every key of the namespace but the rate limit's, which expires by itself."""
    found = {k.decode() async for k in redis.scan_iter(match=f"{names.namespace}:*")}
    return {k for k in found if not k.endswith(":rate")}


async def queue_depth(settings: Settings, names: Names, cid: str) -> int | None:
    broker = Broker(settings.amqp_url, names, name="test")
    await broker.connect(declare=False)
    try:
        return await broker.queue_depth(cid)
    finally:
        await broker.close()


async def test_purge_deletes_old_closed_conversations_and_nothing_else(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    old, recent, running = [await create_conversation(fleet.url, bearer, "hi") for _ in range(3)]
    async with http(fleet.url, bearer) as api:
        await api.delete(f"/api/conversations/{old}")
        await status_becomes(redis, names, old, "closed")
        seconds, micros = await redis.time()
        cutoff = seconds + micros / 1e6
        while (await redis.time())[0] + (await redis.time())[1] / 1e6 <= cutoff + 0.002:
            await asyncio.sleep(0.001)
        await api.delete(f"/api/conversations/{recent}")
        await status_becomes(redis, names, recent, "closed")
    await status_becomes(redis, names, running, "running")
    # A queue left behind (its owner deletes it on closing; one declared since is not).
    broker = Broker(settings.amqp_url, names, name="test")
    await broker.connect(declare=False)
    try:
        await broker.declare_conversation(old)
    finally:
        await broker.close()
    before = await keys(redis, names)
    logged = {cid: await redis.llen(names.log(cid)) for cid in (recent, running)}
    assert logged[running] >= 4

    date = datetime.fromtimestamp(cutoff, UTC).isoformat()
    result = await run_fleet(settings, "purge", "--closed-before", date)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("closed: 1/1 done: 1 deleted, 0 kept\n"), result.stdout
    gone = {k for k in before if f":conv:{old}:" in k}
    assert names.meta(old) in gone and names.log(old) in gone and names.epoch(old) in gone
    assert await keys(redis, names) == before - gone
    assert await redis.zrange(names.user_conversations("alice"), 0, -1) == [
        recent.encode(),
        running.encode(),
    ]
    assert await redis.zrange(names.by_status("closed", names.group("alice")), 0, -1) == [
        recent.encode()
    ]
    assert {cid: await redis.llen(names.log(cid)) for cid in (recent, running)} == logged
    assert await queue_depth(settings, names, running) == 0
    assert await queue_depth(settings, names, old) is None
    async with http(fleet.url, bearer) as api:
        assert (await api.get(f"/api/conversations/{old}")).status_code == 404
        assert (await api.get(f"/api/conversations/{recent}")).json()["status"] == "closed"


async def test_a_conversation_that_receives_input_while_purge_runs_is_kept(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(passivate_after=0.3, publish_timeout=2.0)
    bearer = token(settings, "alice")
    cids = [await create_conversation(fleet.url, bearer, "hi") for _ in range(40)]
    for cid in cids:
        await status_becomes(redis, names, cid, "idle")  # passivated: no owner, no client
    # The purge goes oldest idle first: input goes to conversations in the middle, so
    # that some is admitted before the purge reaches them, and some after.
    idle = cast(
        list[bytes], await redis.zrange(names.by_status("idle", names.group("alice")), 0, -1)
    )
    order = [text(c) for c in idle]
    assert sorted(order) == sorted(cids)
    touched = order[8:32]
    untouched = order[:8] + order[32:]

    purge = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "fleet", "purge", "--idle-for", "0s"],
        env=fleet_env(settings),
        stdout=asyncio.subprocess.PIPE,
    )
    assert purge.stdout is not None
    assert b"candidate(s)" in await purge.stdout.readline()  # purging from now on
    async with http(fleet.url, bearer) as api:

        async def act(cid: str) -> tuple[str, dict[str, object]]:
            body = {"kind": "message", "data": {"content": "wait"}, "action_id": f"a-{cid}"}
            response = await api.post(f"/api/conversations/{cid}/actions", json=body)
            return cid, response.json()

        acks = dict(await asyncio.gather(*(act(cid) for cid in touched)))
    output = (await purge.stdout.read()).decode()
    assert await purge.wait() == 0, output

    for cid, ack in acks.items():
        if ack.get("ok"):  # admitted before it was held: kept, and answered
            assert await redis.exists(names.meta(cid))
            await answered(redis, names, cid, f"a-{cid}")
        else:  # held first: refused, and purged
            assert ack["error"]["code"] in ("conversation_closed", "not_found")  # type: ignore[index]
            assert not await redis.exists(names.meta(cid))
    for cid in untouched:
        assert not await redis.exists(names.meta(cid), names.log(cid), names.actions(cid))
        assert await queue_depth(settings, names, cid) is None
        assert await redis.zscore(names.user_conversations("alice"), cid) is None
        assert await redis.zscore(names.by_status("idle", names.group("alice")), cid) is None


async def test_input_found_in_the_queue_restores_the_conversation(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(passivate_after=0.3, publish_timeout=2.0)
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, "hi")
    await status_becomes(redis, names, cid, "idle")
    dry = await run_fleet(settings, "purge", "--idle-for", "0s", "--dry-run")
    assert dry.stdout.endswith("idle: 1/1 done: 1 would be deleted, 0 kept\n"), dry.stdout
    assert await redis.exists(names.meta(cid))
    # Input that reached the queue without an admission the purge could see (a gateway
    # that stalled between the two): the purge finds it there and gives the conversation back.
    broker = Broker(settings.amqp_url, names, name="test")
    await broker.connect(declare=False)
    try:
        await broker.declare_conversation(cid)  # passivation deleted it; the gateway declares it
        await broker.publish_input(cid, Action("late-1", "message", "still here"))
    finally:
        await broker.close()

    result = await run_fleet(settings, "purge", "--idle-for", "0s")

    assert result.stdout.endswith("idle: 1/1 done: 0 deleted, 1 kept (1 restored)\n"), result.stdout
    await answered(redis, names, cid, "late-1")
    assert await redis.hget(names.meta(cid), "purged_from") is None


async def test_purge_without_anything_to_purge_is_one_line(settings: Settings) -> None:
    result = await run_fleet(settings, "purge")
    assert result.returncode == 1
    assert result.stderr == (
        "fleet purge: nothing to purge: give --closed-before or --idle-for, "
        "or set FLEET_PURGE_CLOSED_AFTER or FLEET_PURGE_IDLE_AFTER\n"
    )
    bad = await run_fleet(settings, "purge", "--idle-for", "soon")
    assert bad.stderr == "fleet purge: 'soon' is not an age (like 45s, 30m, 12h, 30d, 2w)\n"
