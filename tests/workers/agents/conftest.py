"""Fixtures for the agents' tests: the fake LLM served in-process on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from fleet.fake_llm.server import FakeLLM
from fleet.harness import free_port
from tests.conftest import wait_for_event

PACE = 40.0  # words per second of unscripted replies


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = FakeLLM("127.0.0.1", free_port(), PACE)
    task = asyncio.create_task(server.main())
    await wait_for_event(server.listening, task)
    yield server
    server.stop()
    await task


@pytest.fixture
async def http(fake: FakeLLM) -> AsyncIterator[httpx.AsyncClient]:
    """Scripts and observes the fake (``/fake/*``)."""
    async with httpx.AsyncClient(base_url=fake.url) as client:
        yield client
