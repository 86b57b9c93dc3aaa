"""What the fake has seen (``GET /fake/requests``): every request, in order, and what
became of it, updated while it is being answered."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from fleet.fake_llm.script import Pick


@dataclass
class Exchange:
    """One request to ``/v1/chat/completions`` and its answer, as far as it got.

    ``chunks_sent`` counts ``chat.completion.chunk`` events; ``completed``: the whole
    answer was sent (``data: [DONE]`` for a stream); ``disconnected_at``: when the client
    went away before that.
    """

    id: int
    received_at: float
    body: Any  # the decoded JSON, or the raw text when it is not JSON
    script_id: int | None = None  # None: the default reply (or none at all)
    match: str | None = None
    reply_index: int | None = None
    reply: dict[str, Any] | None = None
    status: int | None = None  # None: no status line was sent
    error: str | None = None  # why a malformed body was refused
    chunks_sent: int = 0
    completed: bool = False
    disconnected_at: float | None = None
    finished_at: float | None = None

    @property
    def disconnected(self) -> bool:
        return self.disconnected_at is not None

    def answered_by(self, pick: Pick) -> None:
        self.reply = pick.reply.model_dump(exclude_defaults=True)
        self.reply_index = pick.index
        if pick.script is not None:
            self.script_id = pick.script.id
            self.match = pick.script.match

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "disconnected": self.disconnected}


class Journal:
    """Every exchange since the last ``clear``; ids keep counting across clears."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._ids = itertools.count(1)

    def open(self, raw: bytes) -> Exchange:
        """Record a request as it arrives."""
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        exchange = Exchange(next(self._ids), time.time(), body)
        self.exchanges.append(exchange)
        return exchange

    def clear(self) -> int:
        """Forget every exchange; how many there were."""
        count = len(self.exchanges)
        self.exchanges.clear()
        return count
