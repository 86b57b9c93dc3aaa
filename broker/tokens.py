"""HS256 JWTs: ``sub`` is the user id, ``exp`` is required and honoured."""

from __future__ import annotations

import re
import time

import jwt

from broker.errors import Unauthorized

USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


def issue(secret: str, user: str, ttl: float = 24 * 3600) -> str:
    """A token for ``user`` that expires after ``ttl`` seconds."""
    if not USER_ID.fullmatch(user):
        raise ValueError(f"user id must match {USER_ID.pattern}")
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + int(ttl)}, secret, algorithm="HS256")


def verify(secret: str, token: object) -> str:
    """The user id a token names; ``Unauthorized`` for anything not signed by ``secret``."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("a token is required")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthorized(f"token has no '{exc.claim}' claim") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("invalid token") from exc
    user = claims["sub"]
    if not isinstance(user, str) or not USER_ID.fullmatch(user):
        raise Unauthorized("invalid token subject")
    return user
