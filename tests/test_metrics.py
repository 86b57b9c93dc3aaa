"""Prometheus metrics, scraped from real processes: each exposes only its role's
(gateways on /metrics, workers and reapers on FLEET_METRICS_PORT), with /healthz."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys

import httpx
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from broker.exposition import Exposition
from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.fleet.test_status import fleet_env
from tests.support import Client, create_conversation, http, owned, replied_to, token

# Names only one role may export: a process of another role must not show them.
ROLE_ONLY = {
    "gateway": "fleet_connected_clients",
    "worker": "fleet_conversations_owned",
    "reaper": "fleet_reaper_leader",
}


def value(text: str, name: str, labels: str = "", default: float | None = None) -> float:
    selector = re.escape(f"{name}{{{labels}}}" if labels else name)
    match = re.search(rf"^{selector} ([0-9.e+-]+)$", text, re.MULTILINE)
    if match is None and default is not None:
        return default
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


def only_its_role(text: str, role: str) -> None:
    for other, name in ROLE_ONLY.items():
        assert (f"\n# TYPE {name} " in text) == (other == role), (role, name)


async def scrape(url: str) -> str:
    async with http(url) as api:
        response = await api.get("/metrics")
        assert response.status_code == 200
        return response.text


async def test_every_process_exposes_its_roles_metrics(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port, worker_port, reaper_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    worker_url, reaper_url = f"http://127.0.0.1:{worker_port}", f"http://127.0.0.1:{reaper_port}"
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
            while len(await owned(redis, names, doomed_id)) < 4:
                await asyncio.sleep(0.02)
        await fleet.worker(FLEET_METRICS_PORT=str(worker_port), FLEET_WORKER_CAPACITY="8")
        doomed.signal(signal.SIGKILL)
        await fleet.processes[1].wait_for("worker_reaped")
        again = await client.act("again")
        await client.wait_for(replied_to(again["action_id"]))
        async with http(url, bearer) as api:
            assert (await api.get("/api/conversations/nope")).status_code == 404
        # The leader counts the fleet every few seconds: wait for a count taken once the
        # dead worker was forgotten and its conversations claimed again (a count taken
        # in between sees one live worker owning nothing yet).
        counted = ('fleet_live_processes{role="worker"} 1.0', 'status="running"} 4.0')
        async with asyncio.timeout(10):
            reaper = await scrape(reaper_url)
            while not all(line in reaper for line in counted):
                await asyncio.sleep(0.1)
                reaper = await scrape(reaper_url)
        gateway, worker = await scrape(url), await scrape(worker_url)
        async with http(worker_url) as api:
            health = await api.get("/healthz")
        await client.close()

    only_its_role(gateway, "gateway")
    only_its_role(worker, "worker")
    only_its_role(reaper, "reaper")
    assert value(gateway, "fleet_connected_clients") == 1
    assert value(gateway, "fleet_actions_received_total") == 2
    assert value(gateway, "fleet_actions_acknowledged_total") == 2
    assert value(gateway, "fleet_publish_confirm_seconds_count") == 2
    assert value(gateway, "fleet_events_delivered_total") == 8
    assert value(gateway, "fleet_refusals_total", 'code="not_found"') == 1
    assert value(worker, "fleet_conversations_owned") == 4
    assert value(worker, "fleet_worker_capacity") == 8
    assert value(worker, "fleet_worker_utilization_ratio") == 0.5
    assert value(worker, "fleet_claims_total") == value(worker, "fleet_failovers_total") == 4
    # the failover's resume: from the dead worker's last heartbeat to each claim
    resumed = value(worker, "fleet_claim_latency_seconds_count", 'cause="failover"')
    asked = value(worker, "fleet_claim_latency_seconds_count", 'cause="input"', default=0)
    assert resumed >= 3 and resumed + asked == 4  # the gateway may ask first for "again"
    assert value(worker, "fleet_claim_latency_seconds_bucket", 'cause="failover",le="0.5"') == 0
    assert value(worker, "fleet_action_latency_seconds_count") == 1  # "again", ack to reply
    assert value(worker, "fleet_heartbeat_seconds_count") > 0
    assert value(worker, "fleet_fenced_writes_refused_total") == 0
    assert "process_resident_memory_bytes" in worker
    assert value(reaper, "fleet_workers_reaped_total") == 1
    assert value(reaper, "fleet_reaper_leader") == 1
    assert value(reaper, "fleet_live_processes", 'role="worker"') == 1
    assert value(reaper, "fleet_live_processes", 'role="gateway"') == 1
    assert value(reaper, "fleet_conversations", 'status="running"') == 4
    assert value(reaper, "fleet_dispatch_backlog") == 0
    assert value(reaper, "fleet_dead_letters") == 0
    assert (health.status_code, health.json()) == (200, {"ok": True})


async def test_stream_frames_stops_and_aborted_turns_are_counted(settings: Settings) -> None:
    port, worker_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, FLEET_ECHO_DELAY="0.1") as fleet:
        await fleet.gateway(port)
        await fleet.worker(FLEET_METRICS_PORT=str(worker_port))
        bearer = token(settings, "alice")
        client = await Client().connect(url, bearer, await create_conversation(url, bearer))
        ack = await client.act("one two three four five six seven eight nine ten")
        async with asyncio.timeout(10):
            while len(client.frames) < 2:
                await asyncio.sleep(0.02)
        assert (await client.stop())["ok"]
        await client.wait_for(lambda ev: any(e["kind"] == "turn_aborted" for e in ev))
        worker = await scrape(f"http://127.0.0.1:{worker_port}")
        gateway = await scrape(url)
        await client.close()
    assert value(worker, "fleet_stops_total") == 1
    assert value(worker, "fleet_turns_aborted_total", 'reason="stopped"') == 1
    assert value(worker, "fleet_stream_frames_total") >= len(client.frames) >= 2
    assert value(gateway, "fleet_stream_frames_delivered_total") == len(client.frames)
    assert ack["action_id"] not in {e["data"].get("in_reply_to") for e in client.events}
    assert value(worker, "fleet_action_latency_seconds_count") == 0  # stopped: no reply


async def test_health_says_503_once_the_loop_is_stuck() -> None:
    healthy = True
    port = free_port()
    exposition = Exposition(CollectorRegistry(), lambda: healthy, "127.0.0.1", port)
    await asyncio.to_thread(exposition.start)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            assert (await api.get("/healthz")).status_code == 200
            healthy = False
            assert (await api.get("/healthz")).json() == {"ok": False}
            assert (await api.get("/healthz")).status_code == 503
            assert (await api.get("/other")).status_code == 404
    finally:
        await asyncio.to_thread(exposition.close)


def test_a_metrics_port_in_use_is_one_clear_line(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fleet", "worker"],
            env={**fleet_env(settings), "FLEET_METRICS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"fleet: FLEET_METRICS_PORT={port} on 127.0.0.1: Address already in use"
    )
