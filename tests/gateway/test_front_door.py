"""The HTTP front door: per-user rate limits across gateways with Retry-After, CORS for
the HTTP API and Socket.IO alike."""

from __future__ import annotations

import asyncio
import time

import httpx

from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import create_conversation, http, token

RATE, BURST = 5.0, 40
ALLOWED = "http://app.example"


async def test_a_users_rate_limit_holds_across_gateways(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"rate_limit": RATE, "rate_burst": BURST})
    second = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(second)
    bearer = token(settings, "alice")
    urls = [fleet.url, f"http://127.0.0.1:{second}"]

    async with http(urls[0], bearer) as one, http(urls[1], bearer) as two:
        began = time.monotonic()
        responses = await asyncio.gather(
            *((one, two)[i % 2].get("/api/conversations") for i in range(100))
        )
        elapsed = time.monotonic() - began
        other_user = await one.get("/api/conversations", headers=auth(settings, "bob"))

    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    # The burst, plus what the rate refilled while the requests were served.
    assert BURST <= len(accepted) <= BURST + RATE * elapsed + 1
    assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(429, "rate_limited")}
    assert {r.headers["retry-after"] for r in refused} == {"1"}  # a token every 0.2 s
    assert other_user.status_code == 200  # the limit is per user


async def test_actions_count_against_the_same_limit_with_retry_after(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"rate_limit": 0.5, "rate_burst": 2})
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)  # the first request of the burst
    async with http(fleet.url, bearer) as client:
        body = {"kind": "message", "data": {"content": "x"}}
        ok = await client.post(f"/api/conversations/{cid}/actions", json=body)
        limited = await client.post(f"/api/conversations/{cid}/actions", json=body)
    assert ok.status_code == 200
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert int(limited.headers["retry-after"]) == 2  # one request per 2 s


def auth(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, user)}"}


async def test_cors_answers_only_the_configured_origins(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"cors_origins": [ALLOWED]})
    await fleet.start_gateway()
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with httpx.AsyncClient(base_url=fleet.url) as client:
        allowed = await client.options(
            "/api/conversations", headers={"Origin": ALLOWED, **preflight}
        )
        foreign = await client.options(
            "/api/conversations", headers={"Origin": "http://evil.example", **preflight}
        )
        handshake = "/socket.io/?EIO=4&transport=polling"
        sio_allowed = await client.get(handshake, headers={"Origin": ALLOWED})
        sio_foreign = await client.get(handshake, headers={"Origin": "http://evil.example"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert foreign.status_code == 400
    assert "access-control-allow-origin" not in foreign.headers
    assert sio_allowed.status_code == 200
    assert sio_allowed.headers["access-control-allow-origin"] == ALLOWED
    assert sio_foreign.status_code == 400
    assert "access-control-allow-origin" not in sio_foreign.headers


async def test_without_cors_origins_no_foreign_page_is_answered(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    async with httpx.AsyncClient(base_url=fleet.url) as client:
        preflight = await client.options(
            "/api/conversations",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
        )
        sio = await client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": ALLOWED})
        same_origin = await client.get(
            "/socket.io/?EIO=4&transport=polling", headers={"Origin": fleet.url}
        )
    assert preflight.status_code == 400
    assert sio.status_code == 400
    assert same_origin.status_code == 200
