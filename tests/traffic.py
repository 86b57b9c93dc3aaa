"""Steady client traffic for fault tests, and the accounting of what came back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from broker.names import Names
from tests.support import Client, EventList, replies


@dataclass
class Sender:
    """One client in one conversation, sending an action every ``interval`` seconds."""

    cid: str
    client: Client
    acked: dict[str, float] = field(default_factory=dict)  # action id -> time sent
    refused: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        n = 0
        while not stop.is_set():
            action_id = f"{self.cid[:8]}-{n}"
            sent = time.monotonic()
            try:
                ack = await self.client.act(f"msg {n}", action_id=action_id)
            except Exception as exc:  # a timed-out ack: not acknowledged, so not owed
                self.refused.append(f"{action_id}: {exc!r}")
            else:
                if ack.get("ok"):
                    self.acked[action_id] = sent
                else:
                    self.refused.append(f"{action_id}: {ack}")
            n += 1
            await asyncio.sleep(interval)

    def answered(self, _events: object = None) -> bool:
        """Every acknowledged action has its reply (usable as a ``wait_for`` condition)."""
        return self.acked.keys() <= replies(self.client.events).keys()

    def replied_after(self, moment: float) -> Callable[[EventList], bool]:
        """A ``wait_for`` condition: an action sent after ``moment`` was answered."""
        return lambda _events: self.first_reply_after(moment) is not None

    def first_reply_after(self, moment: float) -> float | None:
        """Arrival time of the first reply to an action sent after ``moment``."""
        later = {a for a, sent in self.acked.items() if sent > moment}
        for event, arrived in zip(self.client.events, self.client.arrivals, strict=True):
            if event["kind"] == "message" and event["data"].get("in_reply_to") in later:
                return arrived
        return None


@dataclass
class Tally:
    sent: int
    acked: int
    answered: int
    lost: list[str]
    duplicated: list[str]


async def settle(senders: list[Sender], timeout: float = 30) -> None:
    """Wait (with a deadline) until every acknowledged action has its reply."""
    async with asyncio.timeout(timeout):
        for sender in senders:
            await sender.client.wait_for(sender.answered, timeout=timeout)


async def tally(senders: list[Sender], redis: Redis, names: Names) -> Tally:
    """Count from what clients received and from the log itself (the record)."""
    lost: list[str] = []
    duplicated: list[str] = []
    answered = 0
    for sender in senders:
        received = replies(sender.client.events)
        ids = [e["id"] for e in sender.client.events]
        assert ids == list(range(len(ids))), f"{sender.cid}: client saw ids {ids}"
        logged = [orjson.loads(raw) for raw in await redis.lrange(names.log(sender.cid), 0, -1)]
        assert [e["id"] for e in logged] == list(range(len(logged))), f"{sender.cid}: gap in log"
        user = Counter(e["data"]["action_id"] for e in logged if e["source"] == "user")
        agent = Counter(
            e["data"]["in_reply_to"]
            for e in logged
            if e["source"] == "agent" and e["kind"] == "message"
        )
        for action_id in sender.acked:
            copies = (len(received.get(action_id, [])), user[action_id], agent[action_id])
            if 0 in copies:
                lost.append(action_id)
            elif copies != (1, 1, 1):
                duplicated.append(f"{action_id}: client/user/agent = {copies}")
            else:
                answered += 1
        duplicated += [f"{a}: logged {n}x" for a, n in (user + agent).items() if n > 2]
    sent = sum(len(s.acked) + len(s.refused) for s in senders)
    return Tally(sent, sum(len(s.acked) for s in senders), answered, lost, duplicated)
