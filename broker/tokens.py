"""Tokens: JWTs whose ``sub`` is the user id and whose ``exp`` is required and honoured.

Two kinds are accepted, each only by its own algorithms, so that neither key can pass
for the other (an HS256 token "signed" with a provider's public key is refused):

- HS256, signed with ``FLEET_JWT_SECRET`` (``fleet token USER`` prints one);
- RS256 or ES256, from an identity provider: verified with the key its header names
  in the provider's JWKS (``FLEET_JWT_JWKS_URL``), and only if its issuer and audience
  are ``FLEET_JWT_ISSUER`` and ``FLEET_JWT_AUDIENCE``.

``"admin": true`` in either makes an admin (the dashboard). The provider's keys are
fetched in a thread (PyJWT's client is synchronous), kept, and fetched again when
older than ``KEYS_TTL`` or when a token names a key not seen yet (at most once per
``REFETCH_COOLDOWN``). While the provider is unreachable the keys already fetched go
on working; a token that needs a key never fetched is refused ``unavailable``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from jwt import PyJWK, PyJWKClient

from broker.errors import Unauthorized, Unavailable
from broker.settings import ConfigError, Settings

log = structlog.get_logger()

USER_ID = re.compile(r"^[A-Za-z0-9_.@|-]{1,128}$")
SECRET_ALGORITHM = "HS256"
PROVIDER_ALGORITHMS = ("RS256", "ES256")
KEYS_TTL = 300.0  # seconds a fetched JWKS is used before it is fetched again
REFETCH_COOLDOWN = 10.0  # at most one fetch this often, whatever tokens come in
FETCH_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token speaks for."""

    user: str
    admin: bool = False


def issue(secret: str, user: str, ttl: float = 24 * 3600, admin: bool = False) -> str:
    """An HS256 token for ``user`` that expires after ``ttl`` seconds."""
    if not USER_ID.fullmatch(user):
        raise ValueError(f"user id must match {USER_ID.pattern}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl)}
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm=SECRET_ALGORITHM)


class ProviderKeys:
    """An identity provider's signing keys by ``kid``, fetched off the event loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT)
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")  # monotonic time of the last successful fetch
        self._tried_at = float("-inf")  # and of the last attempt
        self._fetching: asyncio.Future[None] | None = None

    async def key(self, kid: str) -> PyJWK:
        """The key named ``kid``; ``Unauthorized`` if the provider has none such,
        ``Unavailable`` if it cannot be asked and the key was never fetched."""
        now = time.monotonic()
        stale = now - self._fetched_at > KEYS_TTL
        if (stale or kid not in self._keys) and now - self._tried_at > REFETCH_COOLDOWN:
            await self._fetch()
        if kid in self._keys:
            return self._keys[kid]
        if self._fetched_at == float("-inf"):
            raise Unavailable("the identity provider's keys cannot be fetched; retry")
        raise Unauthorized("invalid token")

    async def _fetch(self) -> None:
        """One fetch at a time, shared by every token waiting for it; a failure keeps
        the keys fetched before."""
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch_once())
        await asyncio.shield(self._fetching)

    async def _fetch_once(self) -> None:
        self._tried_at = time.monotonic()
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        except Exception as exc:
            log.warning("jwks_unreachable", url=self.url, error=str(exc)[:200])
            return
        self._keys = {key.key_id: key for key in keys if key.key_id}
        self._fetched_at = time.monotonic()
        log.info("jwks_fetched", url=self.url, keys=len(self._keys))


class Verifier:
    """Checks tokens of either kind; ``verify`` says who a token speaks for."""

    def __init__(
        self,
        secret: str | None = None,
        provider: ProviderKeys | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if secret is None and provider is None:
            raise ConfigError("set FLEET_JWT_SECRET, FLEET_JWT_JWKS_URL, or both")
        if provider is not None and (issuer is None or audience is None):
            raise ConfigError("FLEET_JWT_JWKS_URL needs FLEET_JWT_ISSUER and FLEET_JWT_AUDIENCE")
        self._secret = secret
        self._provider = provider
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        secret = settings.require_jwt_secret() if settings.jwt_secret is not None else None
        url = settings.jwt_jwks_url
        provider = ProviderKeys(url) if url else None
        return cls(secret, provider, settings.jwt_issuer, settings.jwt_audience)

    async def verify(self, token: object) -> Identity:
        """``Unauthorized`` for anything not signed by the secret or the provider
        (and ``Unavailable`` when the provider's key cannot be fetched)."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("a token is required")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        algorithm = header.get("alg")
        if algorithm == SECRET_ALGORITHM and self._secret is not None:
            claims = _decode(token, self._secret, algorithm)
        elif algorithm in PROVIDER_ALGORITHMS and self._provider is not None:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise Unauthorized("invalid token: no key id (kid)")
            key = await self._provider.key(kid)
            if key.algorithm_name != algorithm:
                raise Unauthorized("invalid token")
            claims = _decode(token, key.key, algorithm, self._issuer, self._audience)
        else:
            raise Unauthorized("invalid token")
        user = claims["sub"]
        if not isinstance(user, str) or not USER_ID.fullmatch(user):
            raise Unauthorized("invalid token subject")
        return Identity(user, admin=claims.get("admin") is True)


def _decode(
    token: str, key: Any, algorithm: str, issuer: str | None = None, audience: str | None = None
) -> dict[str, Any]:
    required = ["sub", "exp"] + (["iss", "aud"] if issuer is not None else [])
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"token has no '{exc.claim}' claim") from exc
    except (jwt.InvalidIssuerError, jwt.InvalidAudienceError) as exc:
        raise Unauthorized("token is for another issuer or audience") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("invalid token") from exc
    return claims
