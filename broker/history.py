"""The fleet's recent history, newest first: workers that joined, fenced themselves,
left after a drain or died, and gateways that died. For an operator who opens the
dashboard, or runs ``fleet status``, after the fact: what happened while nobody watched.

One capped list in Redis, written by whoever saw it happen (the worker itself; for a
death, the reaper that moved what the dead held), each record stamped with the Redis
clock (``lua/history.lua``). Best effort: a record that cannot be written is logged
and dropped, and never holds up what it records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
import structlog

from broker import scripts
from broker.names import Names, Role
from broker.redis import Client

KEPT = 200  # the newest records; older ones are dropped as new ones come

Happening = Literal["joined", "fenced", "left", "died"]

SAID: dict[Happening, str] = {
    "joined": "joined",
    "fenced": "fenced itself",
    "left": "left after a drain",
    "died": "died",
}
DONE: dict[Happening, str] = {  # to a worker's conversations
    "fenced": "stopped",
    "left": "handed over",
    "died": "moved to others",
}

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Record:
    """One happening. ``conversations``: those it moved, stopped or handed over (a
    gateway's: those it had clients of); ``reason``: why, when there is one."""

    at: float  # epoch seconds, the Redis clock
    happened: Happening
    role: Role
    process_id: str
    conversations: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line, as ``fleet status`` says it."""
        line = f"{self.role} {self.process_id} {SAID[self.happened]}"
        if self.reason:
            line += f" ({self.reason})"
        if self.conversations is not None:
            done = DONE[self.happened] if self.role == "worker" else "with clients here"
            line += f": {self.conversations} conversation(s) {done}"
        return line


class History:
    """Writes and reads the fleet's recent history."""

    def __init__(self, redis: Client, names: Names) -> None:
        self.redis = redis
        self.key = names.history
        self._record = scripts.load(redis, names, "history")

    async def record(
        self,
        happened: Happening,
        role: Role,
        process_id: str,
        conversations: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Add a record, dropping the oldest past ``KEPT``; logged, not raised, on failure."""
        count = "" if conversations is None else conversations
        args = [KEPT, happened, role, process_id, count, reason or ""]
        try:
            await self._record(keys=[self.key], args=args)
        except Exception as exc:
            log.warning(
                "history_not_recorded", happened=happened, process_id=process_id, error=repr(exc)
            )

    async def recent(self, limit: int = KEPT) -> list[Record]:
        """The newest ``limit`` records, newest first."""
        return records(await self.redis.lrange(self.key, 0, limit - 1))


def records(entries: Sequence[bytes | str]) -> list[Record]:
    """Records as the list holds them."""
    return [Record(**orjson.loads(entry)) for entry in entries]
