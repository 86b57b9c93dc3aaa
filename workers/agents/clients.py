"""The LLM clients a process shares between its conversations: one ``AsyncOpenAI`` per
event loop and LLM configuration.

Building a client costs about 16 ms of CPU (an SSL context), on the event loop: a
worker that takes over 200 conversations at a failover must not build 200 of them, or
it would stall past its liveness TTL and fence itself. Sharing also reuses the
connections to the LLM server. A client belongs to the loop it was built in (its
pooled connections do), hence one set per loop.

The SDK imports its API resources (hundreds of pydantic models) on a client's first
``.chat``: a second or more of blocking work that, on the event loop, made a worker's
watchdog fence it at its first LLM call. They are imported with this module instead,
when the worker loads its agent, before it runs anything.
"""

from __future__ import annotations

import asyncio
import weakref

import openai.resources  # noqa: F401  (see above: not on the event loop, later)
from openai import AsyncOpenAI

from broker.settings import Settings

# Local servers (Ollama, vLLM, llama.cpp) need no key, but the SDK insists on one.
NO_KEY = "fleet-no-key"

_Key = tuple[str, str, float, int]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def shared_client(settings: Settings) -> AsyncOpenAI:
    """The running loop's client for ``settings.llm_*``, built on first use (no I/O:
    it connects on its first request)."""
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
    config: _Key = (
        settings.llm_base_url,
        key or NO_KEY,
        settings.llm_timeout,
        settings.llm_retries,
    )
    loop_clients = _clients.setdefault(asyncio.get_running_loop(), {})
    client = loop_clients.get(config)
    if client is None:
        client = loop_clients[config] = AsyncOpenAI(
            base_url=config[0], api_key=config[1], timeout=config[2], max_retries=config[3]
        )
    return client


async def close_clients() -> None:
    """Close the running loop's clients and their connections (at shutdown)."""
    clients = _clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.close()
