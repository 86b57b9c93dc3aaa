"""A local identity provider for tests: RSA and EC keys generated here, their JWKS
served over HTTP by a real server, tokens signed with them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.harness import free_port
from gateway.app import Uvicorn

ISSUER = "https://id.example.test/"
AUDIENCE = "agent-fleet"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Provider:
    """Two signing keys (``rsa-1``: RS256, ``ec-1``: ES256) served as a JWKS at ``url``;
    ``down`` makes it answer 503, ``delay`` makes it slow; ``fetches`` counts requests."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self.down = False
        self.delay = 0.0
        self.fetches = 0

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
            ]
        }

    def token(
        self,
        user: str = "alice",
        algorithm: str = "RS256",
        kid: str | None = None,
        key: Any = None,
        ttl: float = 600,
        **claims: Any,
    ) -> str:
        """A token signed as the provider signs (``key``, ``kid``, claims: to forge)."""
        now = int(time.time())
        body = {"sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl)}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        signing = key or (self.rsa if algorithm == "RS256" else self.ec)
        kid = kid or ("rsa-1" if algorithm == "RS256" else "ec-1")
        return jwt.encode(body, signing, algorithm=algorithm, headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def confused_token(self, user: str = "alice") -> str:
        """HS256 "signed" with the provider's public key (the algorithm confusion attack:
        a verifier that took the key for an HMAC secret would accept it)."""
        now = int(time.time())
        header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}))
        claims = {"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600}
        signed = f"{header}.{b64(orjson.dumps(claims))}"
        mac = hmac.new(self.public_pem(), signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{b64(mac)}"

    async def _serve_jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return Response("down", status_code=503)
        return JSONResponse(self.jwks())

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Provider]:
        app = Starlette(routes=[Route("/.well-known/jwks.json", self._serve_jwks)])
        config = uvicorn.Config(app, port=self.port, log_config=None, lifespan="off")
        server = Uvicorn(config)
        task = asyncio.create_task(server.serve())
        await asyncio.wait_for(server.listening.wait(), 10)
        try:
            yield self
        finally:
            server.should_exit = True
            await task


def unsigned(claims: dict[str, Any]) -> str:
    """``alg: none``."""
    return f"{b64(orjson.dumps({'alg': 'none', 'typ': 'JWT'}))}.{b64(orjson.dumps(claims))}."
