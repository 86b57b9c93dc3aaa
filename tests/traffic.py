"""Steady client traffic for fault tests, and the accounting of what came back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis, RedisCluster

from broker.names import Names
from tests.support import Client, EventList, replies


@dataclass
class Sender:
    """One client in one conversation, sending an action every ``interval`` seconds."""

    cid: str
    client: Client
    acked: dict[str, float] = field(default_factory=dict)  # action id -> time sent
    refused: list[str] = field(default_factory=list)
    sent: int = 0  # actions sent so far (the next one's number)

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            n = self.sent
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
            self.sent += 1
            await asyncio.sleep(interval)

    def answered(self, _events: object = None) -> bool:
        """Every acknowledged action has its reply (usable as a ``wait_for`` condition)."""
        return not self.unanswered()

    def unanswered(self) -> list[str]:
        """Acknowledged actions with no reply yet, oldest first."""
        received = replies(self.client.events)
        return [action_id for action_id in self.acked if action_id not in received]

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


def unanswered(senders: list[Sender]) -> dict[str, list[str]]:
    """Conversation id -> its acknowledged actions with no reply yet (only those with any)."""
    return {s.cid: missing for s in senders if (missing := s.unanswered())}


async def settled(senders: list[Sender], timeout: float) -> dict[str, list[str]]:
    """Poll (until ``timeout``) until every acknowledged action has its reply; what is
    still unanswered then, by conversation (empty when all were answered)."""
    deadline = time.monotonic() + timeout
    while (missing := unanswered(senders)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return missing


async def settle(senders: list[Sender], timeout: float = 30) -> None:
    """Wait (with a deadline) until every acknowledged action has its reply."""
    async with asyncio.timeout(timeout):
        for sender in senders:
            await sender.client.wait_for(sender.answered, timeout=timeout)


async def tally(senders: list[Sender], redis: Redis | RedisCluster, names: Names) -> Tally:
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
                lost.append(
                    f"{action_id} (conversation {sender.cid}, client/user/agent = {copies})"
                )
            elif copies != (1, 1, 1):
                duplicated.append(
                    f"{action_id} (conversation {sender.cid}, client/user/agent = {copies})"
                )
            else:
                answered += 1
        duplicated += [
            f"{a} (conversation {sender.cid}): logged {n}x"
            for a, n in (user + agent).items()
            if n > 2
        ]
    sent = sum(len(s.acked) + len(s.refused) for s in senders)
    return Tally(sent, sum(len(s.acked) for s in senders), answered, lost, duplicated)
