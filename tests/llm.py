"""The fake LLM for whole-fleet tests: served in-process on a free port, scripted and
watched over its HTTP API, as any process may."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from fleet.fake_llm.server import FakeLLM
from fleet.harness import free_port
from tests.conftest import wait_for_event


@asynccontextmanager
async def serving(pace: float = 200.0) -> AsyncIterator[FakeLLM]:
    server = FakeLLM("127.0.0.1", free_port(), pace)
    task = asyncio.create_task(server.main())
    await wait_for_event(server.listening, task)
    try:
        yield server
    finally:
        server.stop()
        await task


def llm_agent(fake: FakeLLM, model: str = "fleet-fake") -> dict[str, Any]:
    """Settings of a worker running the LLM agent against ``fake``."""
    return {
        "agent": "workers.agents.llm:LLMAgent",
        "llm_base_url": f"{fake.url}/v1",
        "llm_model": model,
        "llm_retries": 0,
    }


def marker() -> str:
    """A unique word to script a conversation's (or a query's) requests by."""
    return f"m-{secrets.token_hex(4)}"


async def script(fake: FakeLLM, match: str, *replies: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        response = await http.post("/fake/script", json={"match": match, "replies": list(replies)})
        assert response.status_code == 201, response.text


async def requests_for(fake: FakeLLM, match: str) -> list[dict[str, Any]]:
    """The requests the fake received that a script of ``match`` answered."""
    async with httpx.AsyncClient(base_url=fake.url) as http:
        records: list[dict[str, Any]] = (await http.get("/fake/requests")).json()["requests"]
    return [r for r in records if r["match"] == match]


async def all_requests(fake: FakeLLM) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        records: list[dict[str, Any]] = (await http.get("/fake/requests")).json()["requests"]
    return records
