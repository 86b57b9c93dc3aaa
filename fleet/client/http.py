"""The HTTP calls a client needs besides the live connection: starting a conversation."""

from __future__ import annotations

from typing import Any

import aiohttp

from broker.events import Refusal


class ApiError(Exception):
    """The HTTP API refused a request: its status and the protocol's ``{code, message}``."""

    def __init__(self, status: int, error: Refusal) -> None:
        super().__init__(f"{status} {error.code}: {error.message}")
        self.status = status
        self.error = error


async def create_conversation(
    url: str, token: str, initial_message: str | None = None, on_busy: str | None = None
) -> str:
    """Start a conversation (``POST /api/conversations``); its id."""
    body: dict[str, Any] = {}
    if initial_message is not None:
        body["initial_message"] = initial_message
    if on_busy is not None:
        body["on_busy"] = on_busy
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(f"{url.rstrip('/')}/api/conversations", json=body, headers=headers) as answer,
    ):
        payload = await answer.json(content_type=None)
        if answer.status != 201:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise ApiError(
                answer.status, Refusal(str(error.get("code")), str(error.get("message")))
            )
        return str(payload["conversation_id"])
