"""A gateway that also takes an identity provider's tokens (RS256, ES256 from its JWKS):
over HTTP and Socket.IO, beside the shared secret's; while the provider is down,
its tokens get 503 ``unavailable`` (retry), everything else goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker import tokens
from broker.settings import Settings
from fleet.client import ConnectionRefused, Conversation
from tests.conftest import InProcessFleet
from tests.identity import AUDIENCE, ISSUER, Provider
from tests.support import http, token


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with Provider().serving() as served:
        yield served


@pytest.fixture
def with_provider(fleet: InProcessFleet, settings: Settings, provider: Provider) -> Settings:
    fleet.settings = settings.model_copy(
        update={"jwt_jwks_url": provider.url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    )
    return fleet.settings


async def test_provider_tokens_work_over_http_and_socketio(
    fleet: InProcessFleet, with_provider: Settings, provider: Provider
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    async with http(fleet.url, provider.token("alice", "RS256")) as alice:
        created = await alice.post("/api/conversations", json={"initial_message": "hi"})
        assert created.status_code == 201, created.text
        cid = created.json()["conversation_id"]
        wrong = await alice.get("/api/conversations", headers=bearer(provider.token(aud="x")))
    async with Conversation(fleet.url, provider.token("alice", "ES256"), cid) as chat:
        answer = await chat.reply_to((await chat.send("and you?")).action_id, timeout=10)
    # The shared secret's tokens name the same users.
    async with http(fleet.url, token(with_provider, "alice")) as same:
        listed = (await same.get("/api/conversations")).json()["conversations"]

    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "unauthorized")
    assert answer.data["content"] == "and you?"
    assert [c["conversation_id"] for c in listed] == [cid]


async def test_a_provider_outage_is_503_and_nothing_else_breaks(
    fleet: InProcessFleet,
    with_provider: Settings,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "REFETCH_COOLDOWN", 0.0)  # ask again at once once it is back
    provider.down = True
    await fleet.start_gateway()
    cid_token = token(with_provider, "alice")
    async with http(fleet.url, cid_token) as by_secret:
        cid = (await by_secret.post("/api/conversations", json={})).json()["conversation_id"]
    async with http(fleet.url, provider.token("alice")) as client:
        during = await client.get("/api/conversations")
        with pytest.raises(ConnectionRefused) as refused:
            await Conversation(fleet.url, provider.token("alice"), cid).connect()
        healthy = await client.get("/healthz")
        async with http(fleet.url, cid_token) as by_secret:
            unaffected = await by_secret.get(f"/api/conversations/{cid}")
        provider.down = False
        after = await client.get("/api/conversations")

    assert (during.status_code, during.json()["error"]["code"]) == (503, "unavailable")
    assert during.headers["retry-after"] == "1"
    assert refused.value.code == "unavailable"
    assert healthy.status_code == 200 and unaffected.status_code == 200
    assert after.status_code == 200


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
