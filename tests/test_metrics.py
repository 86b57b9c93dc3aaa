"""Prometheus metrics: gateways on /metrics, workers and reapers on FLEET_METRICS_PORT."""

from __future__ import annotations

import asyncio
import re
import signal

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import Client, create_conversation, http, token


def value(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def test_every_process_exposes_its_metrics(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port, worker_port, reaper_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.reaper(FLEET_METRICS_PORT=str(reaper_port))
        doomed, doomed_id = await fleet.worker()
        bearer = token(settings, "alice")
        cids = [await create_conversation(url, bearer) for _ in range(4)]
        client = await Client().connect(url, bearer, cids[0])
        assert (await client.act("hi"))["ok"]
        await client.wait_for(lambda ev: len(ev) >= 4)
        async with asyncio.timeout(10):
            while await redis.scard(names.owns(doomed_id)) < 4:
                await asyncio.sleep(0.02)
        await fleet.worker(FLEET_METRICS_PORT=str(worker_port))
        doomed.signal(signal.SIGKILL)
        await fleet.processes[1].wait_for("worker_reaped")
        assert (await client.act("again"))["ok"]
        await client.wait_for(lambda ev: len(ev) >= 8)

        async with http(url) as api:
            gateway = (await api.get("/metrics")).text
        async with http(f"http://127.0.0.1:{worker_port}") as api:
            worker = (await api.get("/metrics")).text
        async with http(f"http://127.0.0.1:{reaper_port}") as api:
            reaper = (await api.get("/metrics")).text
        await client.close()

    assert value(gateway, "fleet_connected_clients") == 1
    assert value(gateway, "fleet_actions_received_total") == 2
    assert value(gateway, "fleet_actions_acknowledged_total") == 2
    assert value(gateway, "fleet_publish_confirm_seconds_count") == 2
    assert value(gateway, "fleet_events_delivered_total") == 8
    assert value(worker, "fleet_conversations_owned") == 4
    assert value(worker, "fleet_claims_total") == value(worker, "fleet_takeovers_total") == 4
    assert value(worker, "fleet_heartbeat_seconds_count") > 0
    assert value(worker, "fleet_fenced_writes_refused_total") == 0
    assert value(reaper, "fleet_workers_reaped_total") == 1
