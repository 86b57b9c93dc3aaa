"""The pages a gateway serves to people: ``/`` (links), ``/docs`` (the OpenAPI
document, rendered in the browser from ``/openapi.json``), ``/dashboard`` (the fleet,
live, from the admin API: it holds no secret, the admin pastes a token).

Each page is one self-contained HTML file in ``static/`` (no CDN, no other request
than to this gateway). Its one inline script and style are allowed by their hashes in
the Content-Security-Policy, and nothing else is: an event's text shown on a page can
never run as script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.openapi import document

STATIC = Path(__file__).resolve().parent / "static"
INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    policy: str


@cache
def page(name: str) -> Page:
    """A page of ``static/`` and the policy allowing exactly its inline script and style."""
    body = (STATIC / name).read_bytes()
    allowed: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, content in INLINE.findall(body):
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        allowed[tag].append(f"'sha256-{digest}'")
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {sources(allowed[b'script'])}",
            f"style-src {sources(allowed[b'style'])}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return Page(body, policy)


def sources(hashes: list[str]) -> str:
    return " ".join(hashes) or "'none'"


def html(name: str) -> Response:
    served = page(name)
    headers = {
        "Content-Security-Policy": served.policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(served.body, media_type="text/html", headers=headers)


async def home(request: Request) -> Response:
    return html("index.html")


async def docs(request: Request) -> Response:
    return html("docs.html")


async def dashboard(request: Request) -> Response:
    return html("dashboard.html")


async def openapi(request: Request) -> Response:
    return Response(orjson.dumps(document()), media_type="application/json")
