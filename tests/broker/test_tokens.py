"""Tokens of the shared secret and of an identity provider (a real JWKS served over
local HTTP): accepted only with the right key, algorithm, issuer, audience and expiry;
the provider's keys fetched once, off the event loop, and kept through an outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker import tokens
from broker.errors import Unauthorized, Unavailable
from broker.settings import ConfigError
from broker.tokens import Identity, ProviderKeys, Verifier
from tests.identity import AUDIENCE, ISSUER, Provider, unsigned

SECRET = "s" * 40


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with Provider().serving() as served:
        yield served


def verifier(provider: Provider, secret: str | None = SECRET) -> Verifier:
    return Verifier(secret, ProviderKeys(provider.url), ISSUER, AUDIENCE)


async def test_rs256_es256_and_the_shared_secret_are_accepted(provider: Provider) -> None:
    check = verifier(provider)
    assert await check.verify(provider.token("alice", "RS256")) == Identity("alice")
    assert await check.verify(provider.token("bob", "ES256", admin=True)) == Identity("bob", True)
    assert await check.verify(provider.token("auth0|42")) == Identity("auth0|42")
    assert await check.verify(tokens.issue(SECRET, "carol")) == Identity("carol")
    assert await check.verify(tokens.issue(SECRET, "dave", admin=True)) == Identity("dave", True)


async def test_everything_else_is_refused(provider: Provider) -> None:
    check = verifier(provider)
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_ec = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged = {
        "wrong issuer": provider.token(iss="https://evil.example/"),
        "no issuer": provider.token(iss=None),
        "wrong audience": provider.token(aud="another-app"),
        "no audience": provider.token(aud=None),
        "another RSA key": provider.token(key=other_rsa),
        "another EC key": provider.token("alice", "ES256", key=other_ec),
        "unknown key id": provider.token(kid="rsa-2"),
        "the EC key's id on an RS256 token": provider.token(kid="ec-1"),
        "expired": provider.token(ttl=-60),
        "no expiry": provider.token(exp=None),
        "alg none": unsigned({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}),
        "HS256 with the public key": provider.confused_token(),
        "HS256 with another secret": tokens.issue("x" * 40, "alice"),
        "garbage": "a.b.c",
    }
    accepted = []
    for name, token in forged.items():
        try:
            await check.verify(token)
            accepted.append(name)
        except Unauthorized:
            pass
    assert accepted == []
    # Without a shared secret, no HS256 token at all: not even one made with the public key.
    with pytest.raises(Unauthorized):
        await verifier(provider, secret=None).verify(provider.confused_token())
    # Without a provider, its tokens are refused.
    with pytest.raises(Unauthorized):
        await Verifier(SECRET).verify(provider.token())


async def test_keys_are_fetched_once_in_a_thread_without_blocking_the_loop(
    provider: Provider,
) -> None:
    provider.delay = 0.5  # a slow provider: a fetch on the event loop would stall it
    check = verifier(provider)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        users = await asyncio.gather(*(check.verify(provider.token(f"u{i}")) for i in range(20)))
    finally:
        ticker.cancel()
    assert [u.user for u in users] == [f"u{i}" for i in range(20)]
    assert provider.fetches == 1  # shared by the twenty tokens
    assert max(gaps) < 0.2, max(gaps)
    await check.verify(provider.token("again", "ES256"))
    assert provider.fetches == 1  # kept


async def test_an_outage_is_unavailable_then_fetched_keys_keep_working(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.down = True
    check = verifier(provider)
    with pytest.raises(Unavailable):
        await check.verify(provider.token())

    monkeypatch.setattr(tokens, "REFETCH_COOLDOWN", 0.0)  # not wait 10 s for the next try
    provider.down = False
    assert (await check.verify(provider.token())).user == "alice"
    provider.down = True
    monkeypatch.setattr(tokens, "KEYS_TTL", 0.0)  # stale: fetched again, and that fails
    fetches = provider.fetches
    assert (await check.verify(provider.token("still", "ES256"))).user == "still"
    assert provider.fetches == fetches + 1
    with pytest.raises(Unauthorized):  # a key never seen: the provider cannot vouch for it
        await check.verify(provider.token(kid="rsa-9"))


def test_a_provider_needs_its_issuer_and_audience() -> None:
    keys = ProviderKeys("http://127.0.0.1:1/jwks.json")
    with pytest.raises(ConfigError, match="FLEET_JWT_ISSUER and FLEET_JWT_AUDIENCE"):
        Verifier(None, keys, ISSUER, None)
    with pytest.raises(ConfigError, match="FLEET_JWT_SECRET, FLEET_JWT_JWKS_URL"):
        Verifier(None, None)


def test_issued_tokens_carry_admin_only_when_asked() -> None:
    plain = jwt.decode(tokens.issue(SECRET, "alice"), SECRET, algorithms=["HS256"])
    admin = jwt.decode(tokens.issue(SECRET, "root", admin=True), SECRET, algorithms=["HS256"])
    assert "admin" not in plain and admin["admin"] is True
