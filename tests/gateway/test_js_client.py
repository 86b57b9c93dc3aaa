"""The official JavaScript client (socket.io-client v4, Node) speaks the client protocol.

``tests/js/client.mjs`` connects, sends ``user_action`` with an ack, receives live events,
disconnects, reconnects with a new socket and ``latest_event_id`` and gets the replay,
then is refused with a bad token; it prints what it saw as JSON and this test checks it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.gateway.test_echo_round_trip import reply
from tests.nodejs import node_with_modules
from tests.support import create_conversation, token

JS_DIR = Path(__file__).resolve().parents[1] / "js"
CLIENT = JS_DIR / "client.mjs"
STREAM = JS_DIR / "stream.mjs"
NODE_TIMEOUT = 90.0  # the script bounds every step (15 s) and itself (60 s)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with ``tests/js``'s npm dependencies installed."""
    return node_with_modules(JS_DIR)


async def run_js_client(node: str, *args: str) -> dict[str, Any]:
    """Run ``client.mjs`` (or ``stream.mjs`` when the first argument is --stream=URL)."""
    script = CLIENT
    if args and args[0].startswith("--stream="):
        script, args = STREAM, (args[0].removeprefix("--stream="), *args[1:])
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        *args,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        process.kill()
        stdout, stderr = await process.communicate()
        raise AssertionError(
            f"js client still running after {NODE_TIMEOUT} s\n{stdout.decode()}{stderr.decode()}"
        ) from None
    assert process.returncode == 0, (
        f"js client exited {process.returncode}\n{stdout.decode()}{stderr.decode()}"
    )
    observed: dict[str, Any] = json.loads(stdout)
    return observed


def content_view(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["id"], e["source"], e["kind"], e["data"]) for e in events]


def answer(first_id: int, content: str, action_id: str) -> list[tuple[Any, ...]]:
    """The four events the echo agent logs for one user message."""
    return [
        (first_id, "user", "message", {"content": content, "action_id": action_id}),
        (first_id + 1, "agent", "state", {"state": "running", "turn_id": action_id}),
        (first_id + 2, "agent", "message", reply(content, action_id)),
        (first_id + 3, "agent", "state", {"state": "awaiting_user_input"}),
    ]


async def test_the_javascript_client_connects_acts_replays_and_is_refused(
    fleet: InProcessFleet, settings: Settings, node: str
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    observed = await run_js_client(node, fleet.url, bearer, cid)

    assert observed["transport"] == {"first": "websocket", "second": "websocket"}
    assert observed["acks"] == {
        "js-1": {"ok": True, "action_id": "js-1"},
        "js-2": {"ok": True, "action_id": "js-2"},
    }
    first, replay, live = (observed["phases"][name] for name in ("first", "replay", "live"))
    assert content_view(first["events"]) == answer(0, "from js", "js-1")
    assert first["disconnect_reason"] == "io client disconnect"
    assert content_view(replay["events"]) == answer(0, "from js", "js-1")[2:]
    assert content_view(live["events"]) == answer(4, "from js again", "js-2")
    assert live["disconnect_reason"] == "io client disconnect"
    every = first["events"] + replay["events"] + live["events"]
    assert all(
        e["conversation_id"] == cid and isinstance(e["ts"], int | float) and e["ts"] > 0
        for e in every
    )
    # A replayed event is the logged event, byte for byte.
    assert replay["events"] == first["events"][2:]
    assert observed["connect_error"] == {
        "message": "invalid token",
        "data": {"code": "unauthorized", "message": "invalid token"},
    }


async def test_the_javascript_client_streams_reconnects_mid_turn_and_stops(
    fleet: InProcessFleet, settings: Settings, node: str
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.04})
    other = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(other)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    observed = await run_js_client(
        node, f"--stream={fleet.url}", f"http://127.0.0.1:{other}", bearer, cid
    )

    assert observed["acks"] == {
        "st-1": {"ok": True, "action_id": "st-1"},
        "st-2": {"ok": True, "action_id": "st-2"},
        "stop": {"ok": True, "action_id": "st-stop"},
    }
    answer_text = " ".join(f"a{i}" for i in range(40))
    first, second = observed["first"], observed["second"]
    before = "".join(f["delta"] for f in first["frames"])
    assert answer_text.startswith(before) and len(first["frames"]) >= 4
    # The other gateway: the events after the last one seen, then one frame with the
    # whole text so far, then the following deltas, then the logged answer.
    assert second["events"][0]["id"] == second["latest_event_id"] + 1
    st1 = [f for f in second["frames"] if f["turn_id"] == "st-1"]
    joined = st1[0]
    assert joined["seq"] >= len(first["frames"]) - 1
    assert [f["seq"] for f in st1] == list(range(joined["seq"], joined["seq"] + len(st1)))
    assert "".join(f["delta"] for f in st1) == answer_text
    stop_events = observed["stop"]["events"]
    assert [(e["source"], e["kind"]) for e in stop_events[-3:]] == [
        ("user", "stop"),
        ("agent", "turn_aborted"),
        ("agent", "state"),
    ]
    assert stop_events[-2]["data"] == {"turn_id": "st-2", "reason": "stopped"}
    assert not any(e["data"].get("in_reply_to") == "st-2" for e in stop_events)
