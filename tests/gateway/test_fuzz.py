"""Property-based fuzzing of `user_action` and the HTTP API (hypothesis).

Hypothesis drives synchronous test functions and reseeds the global `random` for
every example, so the fleet under test runs as real processes (a fleet in this
process would draw the same "random" consumer tags and ids again and again), and
the clients run on an event loop of their own in a background thread.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.settings import Settings
from fleet.harness import LocalFleet, purge
from tests import conftest
from tests.support import Client, create_conversation, replies, token

T = TypeVar("T")

# The clients' thread draws from `random` while hypothesis generates data, and
# hypothesis then suspects the strategies. They do not use it.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=15,
)
# Near-valid actions reach deeper than random JSON.
actions = st.fixed_dictionaries(
    {"kind": st.sampled_from(["message", "Message", "", "close"]), "data": json_values},
    optional={"action_id": json_values | st.text(max_size=200)},
)
payloads = json_values | actions
ERROR_CODES = {"bad_request", "payload_too_large", "rate_limited", "conversation_closed"}


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    settings: Settings
    url: str
    bearer: str
    cid: str
    fuzzer: Client
    bystander: Client
    bystander_cid: str
    bystander_acked: list[str]

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    fleet_settings = conftest.fleet_settings(f"test-{secrets.token_hex(4)}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fleet = LocalFleet(fleet_settings)
    url = f"http://127.0.0.1:{fleet_settings.port}"

    async def start() -> Harness:
        await fleet.gateway(fleet_settings.port)
        await fleet.worker()
        bearer = token(fleet_settings, "fuzz")
        cid = await create_conversation(url, bearer)
        other = await create_conversation(url, token(fleet_settings, "bystander"))
        fuzzer = await Client().connect(url, bearer, cid)
        bystander = await Client().connect(url, token(fleet_settings, "bystander"), other)
        return Harness(loop, fleet_settings, url, bearer, cid, fuzzer, bystander, other, [])

    h = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield h

    async def stop() -> None:
        await h.fuzzer.close()
        await h.bystander.close()
        await fleet.close()
        await purge(fleet_settings.namespace, fleet_settings.redis_url, fleet_settings.amqp_url)

    h.run(stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def bystander_acts(h: Harness, n: int) -> None:
    action_id = f"b{len(h.bystander_acked)}-{n}"
    ack = h.run(h.bystander.act("still fine", action_id=action_id))
    assert ack == {"ok": True, "action_id": action_id}
    h.bystander_acked.append(action_id)


# The module-scoped harness is shared on purpose; the autouse cleanup fixture is
# function scoped but touches only its own, unused namespace.
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(payload=payloads)
def test_user_action_fuzz(harness: Harness, payload: object) -> None:
    ack = harness.run(harness.fuzzer.sio.call("user_action", payload, timeout=10))
    assert isinstance(ack, dict) and ack["ok"] in (True, False)
    if ack["ok"]:
        assert isinstance(ack["action_id"], str)
    else:
        assert ack["error"]["code"] in ERROR_CODES and ack["error"]["message"]
    bystander_acts(harness, 0)


@FUZZ
@given(
    body=json_values | actions,
    raw=st.binary(max_size=300),
    path_id=st.text(max_size=80),
    after=st.text(max_size=12),
    limit=st.text(max_size=12),
)
def test_http_api_fuzz(
    harness: Harness, body: object, raw: bytes, path_id: str, after: str, limit: str
) -> None:
    async def requests() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {harness.bearer}"}
        async with httpx.AsyncClient(
            base_url=harness.url, headers=headers, timeout=10, follow_redirects=True
        ) as c:
            own = f"/api/conversations/{harness.cid}"
            other = f"/api/conversations/{quote(path_id, safe='')}"
            return [
                await c.post(f"{own}/actions", json=body),
                await c.post(f"{own}/actions", content=raw),
                await c.post("/api/conversations", content=raw),
                await c.get(f"{own}/events", params={"after": after, "limit": limit}),
                await c.get("/api/conversations", params={"after": path_id, "limit": limit}),
                await c.get(other),
                await c.get(f"{other}/events"),
                await c.delete(other),
            ]

    for response in harness.run(requests()):
        assert response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json")
        if response.status_code >= 400:
            assert response.json()["error"]["code"]
    bystander_acts(harness, 1)


def test_the_bystander_was_answered_throughout(harness: Harness) -> None:
    """Runs after the fuzzers in this module: every bystander action was answered."""
    assert harness.bystander_acked
    done = harness.run(
        harness.bystander.wait_for(
            lambda ev: set(harness.bystander_acked) <= replies(ev).keys(), timeout=30
        )
    )
    assert [e["id"] for e in done] == list(range(len(done)))
    # Each answered once, and nothing of the fuzzed conversation reached the bystander.
    answered = {action_id: len(r) for action_id, r in replies(done).items()}
    assert answered == dict.fromkeys(harness.bystander_acked, 1)
    assert {e["conversation_id"] for e in done} == {harness.bystander_cid}
