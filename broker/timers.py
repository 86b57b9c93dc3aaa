"""Durable timers of conversations' agents, in Redis: scheduled and cancelled by a
conversation's owner (fenced), fired by the leading reaper into the conversation's
queue, logged once by its owner (the ``timer:<id>`` dedupe key).

A timer lives in its conversation's hash (``Names.timers``) until it is logged or
cancelled, and in one sorted set of due times (``Names.due``) until it is fired. A
timer missed while the fleet was down fires once when the reaper is back: each is one
entry, never a series to catch up on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from broker import scripts
from broker.errors import LeaseLost
from broker.events import TimerFired
from broker.names import Names
from broker.redis import Client, text


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A timer the reaper fires now: into ``conversation_id``'s queue, asking for an
    owner first if it has none live."""

    conversation_id: str
    fired: TimerFired
    needs_owner: bool

    @property
    def member(self) -> str:
        return f"{self.conversation_id} {self.fired.timer_id}"


class Timers:
    """Schedule, cancel, fire and forget conversations' timers."""

    def __init__(self, redis: Client, names: Names) -> None:
        self.redis = redis
        self.names = names
        self._schedule = scripts.load(redis, names, "schedule")
        self._unschedule = scripts.load(redis, names, "unschedule")
        self._due = scripts.load(redis, names, "due")

    def _keys(self, cid: str) -> list[str]:
        n = self.names
        return [n.lease(cid), n.timers(cid), n.due(n.group(cid))]

    async def schedule(self, cid: str, lease: str, timer_id: str, at: float, payload: Any) -> None:
        """Schedule ``timer_id`` at ``at`` (epoch seconds), or move it there."""
        entry = orjson.dumps({"at": at, "payload": payload})
        args: list[str | int | bytes] = [lease, cid, timer_id, int(at * 1000), entry]
        if not await self._schedule(keys=self._keys(cid), args=args):
            raise LeaseLost(f"lease {lease} of {cid} is no longer current")

    async def cancel(self, cid: str, lease: str, timer_id: str) -> bool:
        """Cancel ``timer_id``: False if it was not scheduled (fired, or never was)."""
        done = await self._unschedule(keys=self._keys(cid), args=[lease, cid, timer_id])
        if done == -1:
            raise LeaseLost(f"lease {lease} of {cid} is no longer current")
        return bool(done)

    async def forget(self, cid: str, timer_id: str) -> None:
        """The timer was logged as fired: it is done."""
        await self._unschedule(keys=self._keys(cid), args=["", cid, timer_id])

    async def pending(self, cid: str) -> dict[str, float]:
        """The conversation's scheduled timers: id -> when due (epoch seconds)."""
        entries = await self.redis.hgetall(self.names.timers(cid))
        return {text(tid): float(orjson.loads(entry)["at"]) for tid, entry in entries.items()}

    async def due(self, group: int, limit: int, retry_after: float) -> list[DueTimer]:
        """The group's timers due now (at most ``limit``), each put off by ``retry_after``
        seconds until ``fired`` says it went out."""
        keys = [self.names.due(group), self.names.pending(group)]
        flat = await self._due(keys=keys, args=[limit, int(retry_after * 1000)])
        found = []
        for i in range(0, len(flat), 3):
            cid, timer_id = text(flat[i]).split(" ", 1)
            entry = orjson.loads(flat[i + 1])
            fired = TimerFired(timer_id, entry["payload"], float(entry["at"]))
            found.append(DueTimer(cid, fired, bool(flat[i + 2])))
        return found

    async def next_due(self) -> float | None:
        """When the earliest timer falls due (epoch seconds), if any is scheduled."""
        n = self.names
        firsts = await asyncio.gather(
            *(self.redis.zrange(n.due(g), 0, 0, withscores=True) for g in n.all_groups)
        )
        scores = [float(first[0][1]) for first in firsts if first]
        return min(scores) / 1000 if scores else None

    async def fired(self, timers: list[DueTimer]) -> None:
        """These went out (or cannot go anywhere): not due any more. Each stays in its
        conversation's hash until its owner logs it."""
        by_group: dict[int, list[str]] = {}
        for timer in timers:
            by_group.setdefault(self.names.group(timer.conversation_id), []).append(timer.member)
        for group, members in by_group.items():
            await self.redis.zrem(self.names.due(group), *members)

    async def clear(self, cid: str) -> None:
        """Forget every timer of a conversation closed for good."""
        timer_ids = [text(t) for t in await self.redis.hkeys(self.names.timers(cid))]
        if timer_ids:
            due = self.names.due(self.names.group(cid))
            await self.redis.zrem(due, *(f"{cid} {t}" for t in timer_ids))
        await self.redis.delete(self.names.timers(cid))
