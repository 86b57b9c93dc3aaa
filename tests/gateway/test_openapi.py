"""``/openapi.json`` describes the HTTP API exactly: every route of the app is in it,
and a live gateway fuzzed from it (schemathesis: bodies, parameters and headers the
document allows, and some it does not) answers no 5xx and nothing the document does
not say (status, media type, body schema, required headers). ``/docs`` and ``/``
are pages for people."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from broker.settings import Settings
from fleet.harness import LocalFleet
from gateway.app import Gateway
from gateway.openapi import document
from tests.support import create_conversation, token

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 12  # per operation and kind of data: the whole run takes seconds


async def test_every_route_of_the_app_is_in_the_document(settings: Settings) -> None:
    gateway = Gateway(settings)  # built, not started: its routes are what it would serve
    try:
        app = gateway.app.other_asgi_app
        served = {
            (route.path, method.lower())
            for route in app.routes
            if isinstance(route, Route)
            for method in route.methods or ()
            if method != "HEAD"
        }
    finally:
        await gateway.redis.aclose()
    paths = document()["paths"]
    documented = {(path, method) for path, methods in paths.items() for method in methods}
    assert served == documented


async def test_a_live_gateway_answers_as_the_document_says(settings: Settings) -> None:
    async with LocalFleet(settings) as fleet:
        _, llm = await fleet.fake_llm(pace=1000)
        # A slow owner (a loaded machine) is a 503 within the request's timeout, not none.
        _, url = await fleet.gateway(FLEET_COMPLETION_TIMEOUT="5")
        # The LLM agent, so that owner queries (completions) are answered too.
        await fleet.worker(FLEET_AGENT="workers.agents.llm:LLMAgent", FLEET_LLM_BASE_URL=llm)
        bearer = token(settings, "fuzz")
        live = await create_conversation(url, bearer, initial="hello")
        doomed = await create_conversation(url, bearer)
        admin = token(settings, "root", admin=True)
        failures = await asyncio.to_thread(fuzz, url, bearer, admin, live, doomed)
    assert failures == []


def fuzz(url: str, bearer: str, admin: str, live: str, doomed: str) -> list[str]:
    """Each operation: valid data for a real conversation (``doomed`` for DELETE, so the
    others stay open; as an admin on admin routes) and for made-up ids, and invalid
    data; the failures found."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    auth = {"Authorization": f"Bearer {bearer}"}
    as_admin = {"Authorization": f"Bearer {admin}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"not an operation: {result.err()}")
            continue
        operation = result.ok()
        cid = {"cid": doomed if operation.method.upper() == "DELETE" else live}
        real = cid if "{cid}" in operation.path else None
        own = as_admin if operation.path.startswith("/api/admin/") else auth
        strategy = st.one_of(
            operation.as_strategy(headers=own, path_parameters=real),
            operation.as_strategy(headers=auth),
            operation.as_strategy(schemathesis.GenerationMode.NEGATIVE, headers=auth),
            operation.as_strategy(),  # no token at all
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES * 4,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=url, checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    return failures


async def test_the_docs_and_home_pages_are_self_contained(settings: Settings) -> None:
    async with LocalFleet(settings) as fleet:
        _, url = await fleet.gateway()
        async with httpx.AsyncClient(base_url=url) as client:
            docs = await client.get("/docs")
            home = await client.get("/")
            spec = await client.get("/openapi.json")
    for page in (docs, home):
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "http" not in page.text.replace(url, "").split("<body>")[0]  # no CDN
    assert 'href="/docs"' in home.text and 'href="/dashboard"' in home.text
    assert 'fetch("/openapi.json")' in docs.text
    assert spec.json() == document()
