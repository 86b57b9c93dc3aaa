"""The README's tour, step by step, against ``fleet dev`` as a user runs it: create a
conversation over HTTP, talk to it over Socket.IO, ask its model a completion, kill -9
the worker that runs it, watch another take over and ``fleet dev`` start the dead one
again, ``fleet status``, ``fleet token``, then Ctrl-C stops every process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import FleetProcess, free_port
from tests.support import Client, http, replied_to

BANNER_TOKEN = re.compile(r"token for user 'dev':\s+(\S+)")
BANNER_SECRET = re.compile(r"export FLEET_JWT_SECRET=(\S+)")


def logged(dev: FleetProcess, event: str) -> list[tuple[str, dict[str, Any]]]:
    """``(child name, log line)`` of every JSON line ``fleet dev`` echoed named ``event``."""
    found = []
    for raw in dev.raw:
        name, sep, rest = raw.partition(" | ")
        if sep and rest.startswith("{"):
            line = orjson.loads(rest)
            if line.get("event") == event:
                found.append((name.strip(), line))
    return found


async def until(condition: Any, timeout: float = 20) -> None:
    """Poll (with a deadline) until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_the_readme_tour(settings: Settings, redis: Redis, names: Names) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FLEET_")  # a fresh shell: fleet dev makes up its secret
    }
    env |= {
        "FLEET_NAMESPACE": settings.namespace,
        "FLEET_FAKE_LLM_PORT": str(free_port()),
        "FLEET_FAKE_LLM_PACE": "200",  # the tour's answers, without the human pace
        "PYTHONUNBUFFERED": "1",
    }
    # make run: fleet dev --llm fake (with metrics on ports of the test's own)
    metrics_port = free_port()
    args = ["dev", "--port", str(port), "--llm", "fake", "--metrics-port", str(metrics_port)]
    dev = FleetProcess("fleet-dev", args, env)
    await dev.start()
    try:
        await until(lambda: any(BANNER_SECRET.search(line) for line in dev.raw), timeout=60)
        text = "\n".join(dev.raw)
        bearer = BANNER_TOKEN.search(text)[1]  # type: ignore[index]
        secret = BANNER_SECRET.search(text)[1]  # type: ignore[index]
        url = f"http://127.0.0.1:{port}"

        # curl -X POST .../api/conversations -d '{"initial_message": "hello"}'
        async with http(url, bearer) as api:
            created = await api.post("/api/conversations", json={"initial_message": "hello"})
            assert created.status_code == 201, created.text
            cid = created.json()["conversation_id"]
            async with asyncio.timeout(20):
                while len(events := await read_events(api, cid)) < 4:
                    await asyncio.sleep(0.05)
        assert [(e["source"], e["kind"]) for e in events] == [
            ("user", "message"),
            ("agent", "state"),
            ("agent", "message"),
            ("agent", "state"),
        ]
        assert events[2]["data"]["content"].startswith('You said: "hello".')

        # talk.py: replay, then an action, then the agent's answer, streamed then logged
        client = await Client().connect(url, bearer, cid)
        ack = await client.act("hi")
        assert ack["ok"], ack
        events = await client.wait_for(replied_to(ack["action_id"]))
        answer = next(e for e in events if e["data"].get("in_reply_to") == ack["action_id"])
        assert client.text.shown == {(ack["action_id"], 0): answer["data"]["content"]}

        # curl .../completions: its owner asks the conversation's model; nothing is logged
        async with http(url, bearer) as api:
            before = await read_events(api, cid)
            question = {"messages": [{"role": "user", "content": "Say hello in French"}]}
            asked = await api.post(f"/api/conversations/{cid}/completions", json=question)
            assert asked.status_code == 200, asked.text
            assert asked.json()["content"].startswith('You said: "Say hello in French".')
            assert await read_events(api, cid) == before
            one = (await api.get(f"/api/conversations/{cid}")).json()
        assert (one["agent_state"], one["connections"]) == ("awaiting_user_input", 1)

        # kill -9 the worker that claimed it (its pid is in its worker_id)
        [(owner_name, claim)] = logged(dev, "lease_claimed")
        assert claim["conversation_id"] == cid
        owner_pid = int(claim["worker_id"].split("-")[-2])
        os.kill(owner_pid, signal.SIGKILL)
        await until(lambda: len(logged(dev, "lease_claimed")) == 2)
        _, takeover = logged(dev, "lease_claimed")[1]
        assert takeover["epoch"] > claim["epoch"]
        assert takeover["worker_id"] != claim["worker_id"]
        again = await client.act("still there?")
        await client.wait_for(replied_to(again["action_id"]))
        await client.close()

        # fleet dev started the dead worker again, and said so; the rest kept running
        await until(lambda: any(f"{owner_name} restarted" in line for line in dev.raw))
        assert any(f"{owner_name} exited with -9" in line for line in dev.raw)
        await until(lambda: len(logged(dev, "worker_started")) == 3)
        assert not any("stopping every process" in line for line in dev.raw)

        # fleet status (same FLEET_NAMESPACE) and fleet token (FLEET_JWT_SECRET exported)
        status = await run_fleet(["status"], env)
        assert status.returncode == 0, status.stderr
        alive = re.findall(r"^  \S+ .* alive$", status.stdout, re.MULTILINE)
        assert len(alive) == 4, status.stdout  # the gateway, both workers, the reaper

        # every process's metrics, on the ports the banner lists, each its role's only
        async with httpx.AsyncClient(timeout=10) as scraper:
            for name, offset in (("worker-0", 0), ("worker-1", 1), ("reaper-0", 2)):
                metrics_url = f"http://127.0.0.1:{metrics_port + offset}/metrics"
                assert re.search(rf"^    {name} +{metrics_url}$", text, re.MULTILINE), text
                scraped = (await scraper.get(metrics_url)).text
                assert ("fleet_conversations_owned " in scraped) == name.startswith("worker")
                assert ("fleet_reaper_leader " in scraped) == name.startswith("reaper")
            gateway_metrics = (await scraper.get(f"{url}/metrics")).text
        assert "fleet_connected_clients " in gateway_metrics
        assert "fleet_conversations_owned" not in gateway_metrics
        token = await run_fleet(["token", "someone"], {**env, "FLEET_JWT_SECRET": secret})
        assert token.returncode == 0 and token.stdout.count(".") == 2

        # Ctrl-C stops every process
        dev.signal(signal.SIGINT)
        assert await dev.wait(30) == 0
        assert any("stopping every process" in line for line in dev.raw)
        stopped = {name for name, _ in logged(dev, "gateway_stopped")}
        stopped |= {name for name, _ in logged(dev, "worker_stopped")}
        stopped |= {name for name, _ in logged(dev, "reaper_stopped")}
        assert stopped == {"gateway-0", "worker-0", "worker-1", "reaper-0"}
    finally:
        await dev.stop()


async def read_events(api: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await api.get(f"/api/conversations/{cid}/events")).json()[
        "events"
    ]
    return events


async def run_fleet(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fleet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
