"""The README's tour, step by step, against ``fleet dev`` as a user runs it: create a
conversation over HTTP, talk to it with the README's Python client as printed, ask its
model a completion, kill -9 the worker that runs it (the client goes on), watch another
take over and ``fleet dev`` start the dead one again, ``fleet status``, ``fleet token``,
then Ctrl-C stops every process."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.client import Conversation
from fleet.harness import FleetProcess, free_port
from tests.support import http

README = Path(__file__).resolve().parents[2] / "README.md"
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


async def test_the_readme_tour(
    settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
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

        # talk.py, as printed: the ack, the replay, then the answer streamed, then logged
        talk = await run_talk(tmp_path, url, bearer, cid)
        assert talk.returncode == 0, talk.stderr + "\nfleet dev said:\n" + "\n".join(dev.raw[-60:])
        printed = talk.stdout.splitlines()
        assert printed[0].startswith("Ack(action_id=") and "error=None" in printed[0]
        ids = [int(line.split(" ", 1)[0]) for line in printed[1:] if not line.startswith(" ")]
        assert ids == list(range(ids[-1] + 1))  # the log so far, then live, each once
        streamed = "".join(line.removeprefix("  ... ") for line in printed if line[:1] == " ")
        answer = printed[-1].split(" ", 3)
        assert answer[1:3] == ["agent", "message"]
        reply = ast.literal_eval(answer[3])  # printed as a Python dict
        assert streamed == reply["content"]  # the reply, streamed before it was logged

        async with Conversation(url, bearer, cid, latest_event_id=ids[-1]) as chat:
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

            # kill -9 the worker that claimed it last (its pid is in its worker_id; on a
            # loaded machine a worker whose loop stalled may have handed it over already)
            claims = logged(dev, "lease_claimed")
            owner_name, claim = claims[-1]
            assert claim["conversation_id"] == cid
            owner_pid = int(claim["worker_id"].split("-")[-2])
            os.kill(owner_pid, signal.SIGKILL)
            await until(lambda: len(logged(dev, "lease_claimed")) > len(claims))
            taker, takeover = logged(dev, "lease_claimed")[len(claims)]
            assert takeover["epoch"] > claim["epoch"]
            assert taker != owner_name  # the other worker (process)
            again = await chat.ask("still there?", timeout=20)
        assert again.kind == "message" and "still there?" in again.data["content"]

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

        # every process's metrics, on the ports the banner lists (the first free ones
        # from --metrics-port), each its role's only
        banner = re.findall(r"^    (\S+) +http://127.0.0.1:(\d+)/metrics$", text, re.MULTILINE)
        listed = {name: int(port) for name, port in banner}
        assert metrics_port <= listed["worker-0"] < listed["worker-1"] < listed["reaper-0"], text
        async with httpx.AsyncClient(timeout=10) as scraper:
            for name in ("worker-0", "worker-1", "reaper-0"):
                metrics_url = f"http://127.0.0.1:{listed[name]}/metrics"
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


def talk_py(url: str) -> str:
    """The tour's Python client, as printed, talking to ``url`` instead of port 8000."""
    tour = README.read_text().split("## A short tour", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", tour, re.DOTALL)
    assert found is not None, "the README's tour lost its Python client"
    return found.group(1).replace("http://127.0.0.1:8000", url)


async def run_talk(
    directory: Path, url: str, bearer: str, cid: str
) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/python talk.py $TOKEN <conversation id>``."""
    script = directory / "talk.py"
    script.write_text(talk_py(url))
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), bearer, cid],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
