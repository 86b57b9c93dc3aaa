"""A worker that stops responding, paused by SIGSTOP or with its event loop blocked by a
synchronous agent, for 20 s under traffic: it holds nothing for long. Every action
acknowledged meanwhile is answered within 3.5 s of being sent, in the order the acks
were given, once; the worker fences itself when it wakes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.chaos.harness import Traffic, assert_epochs_grow, under_traffic
from tests.support import owned, replies
from tests.traffic import Sender

HANG = 20.0
# What the hung worker was handed, the broker gives back once it drops its connection:
# after two to three heartbeats (1 s each, the liveness TTL) of silence, so about 3 s
# (2.9-3.13 s measured in make test runs); then the next owner answers in milliseconds.
DELAY_BOUND = 3.5


def reply_delays(sender: Sender, since: float) -> list[float]:
    """Send-to-reply seconds of each action acknowledged after ``since``."""
    arrival: dict[str, float] = {}
    for event, arrived in zip(sender.client.events, sender.client.arrivals, strict=True):
        if event["source"] == "agent" and event["kind"] == "message":
            arrival.setdefault(event["data"]["in_reply_to"], arrived)
    return [arrival[a] - sent for a, sent in sender.acked.items() if sent > since]


def assert_answered_in_ack_order(sender: Sender) -> None:
    answered = [a for a in replies(sender.client.events) if a in sender.acked]
    acked = sorted(sender.acked, key=sender.acked.__getitem__)
    assert answered == [a for a in acked if a in answered], f"{sender.cid}: out of order"


async def hang_and_check(
    traffic: Traffic, held: set[str], hung_at: float, name: str, redis: Redis, names: Names
) -> None:
    """Traffic goes on through the hang; then every delay, order and count is checked."""
    hit = [s for s in traffic.senders if s.cid in held]
    assert hit, "the hung worker held no conversation"
    resume = await traffic.resumed(hit, hung_at, timeout=HANG)
    row = await traffic.finish(name, redis, names, resume)
    delays = [d for s in traffic.senders for d in reply_delays(s, hung_at)]
    print(f"\n{name}: {len(delays)} actions acked during the hang, worst delay {max(delays):.2f}s")
    assert max(delays) <= DELAY_BOUND, f"worst reply delay {max(delays):.2f}s"
    for sender in traffic.senders:
        assert_answered_in_ack_order(sender)
    assert row.lost == row.duplicated == 0
    assert await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])


async def test_a_worker_paused_for_20s_holds_nothing(
    settings: Settings, redis: Redis, names: Names
) -> None:
    async with LocalFleet(settings, FLEET_AGENT="tests.agents:EpochEcho") as fleet:
        workers, traffic = await under_traffic(fleet, settings, 30, interval=0.2)
        victim, victim_id = workers[0]
        held = await owned(redis, names, victim_id)

        victim.signal(signal.SIGSTOP)
        paused = time.monotonic()
        await asyncio.sleep(HANG)  # the fault itself, with traffic going on
        victim.signal(signal.SIGCONT)
        fenced = await victim.wait_for("worker_fenced")
        assert fenced["worker_id"] == victim_id

        await hang_and_check(traffic, held, paused, "sigstop 20s", redis, names)
        await traffic.close()


async def test_a_worker_whose_agent_blocks_its_loop_for_20s_holds_nothing(
    settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
    env = {
        "FLEET_AGENT": "tests.agents:LoopBlocker",
        "BLOCK_SECONDS": str(HANG),
        "CRASH_MARKERS": str(tmp_path),
    }
    async with LocalFleet(settings, **env) as fleet:
        workers, traffic = await under_traffic(fleet, settings, 30, interval=0.2)
        victim, victim_id = workers[0]
        held = await owned(redis, names, victim_id)
        blocker = next(s for s in traffic.senders if s.cid in held)

        blocked = time.monotonic()
        ack = await blocker.client.act("block-loop", action_id="block")
        assert ack["ok"]
        await asyncio.sleep(HANG)  # the fault itself, with traffic going on
        fenced = await victim.wait_for("worker_fenced", timeout=HANG + 10)
        assert (fenced["worker_id"], fenced["reason"]) == (victim_id, "loop_stalled")

        await hang_and_check(traffic, held, blocked, "blocked loop 20s", redis, names)
        assert replies(blocker.client.events)["block"] == ["block-loop"]  # once
        await traffic.close()
