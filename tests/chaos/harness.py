"""What every chaos scenario does: run traffic, measure resumes, account, report a row."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis, RedisCluster

from broker.names import Names
from broker.redis import connect
from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet, free_port
from tests.support import Client, create_conversation, owned, replies, token
from tests.traffic import Sender, settled, tally, unanswered


@dataclass(frozen=True)
class Row:
    scenario: str
    sent: int
    acked: int
    answered: int
    lost: int
    duplicated: int
    resume: tuple[float, ...]


REPORT: list[Row] = []


def percentile(values: tuple[float, ...], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report_table() -> str:
    if not REPORT:
        return ""
    head = f"{'scenario':<28}{'sent':>7}{'acked':>7}{'answered':>9}{'lost':>6}{'dup':>5}"
    head += f"{'resume p50':>12}{'p99':>8}{'max':>8}"
    lines = [head]
    for r in REPORT:
        times = (
            f"{percentile(r.resume, 0.5):>11.3f}s{percentile(r.resume, 0.99):>7.3f}s"
            f"{max(r.resume):>7.3f}s"
            if r.resume
            else f"{'-':>12}{'-':>8}{'-':>8}"
        )
        lines.append(
            f"{r.scenario:<28}{r.sent:>7}{r.acked:>7}{r.answered:>9}{r.lost:>6}{r.duplicated:>5}"
            + times
        )
    return "\n".join(lines)


class Traffic:
    """One sending client per conversation, all in one user's name."""

    def __init__(self, senders: list[Sender]) -> None:
        self.senders = senders
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, url: str, bearers: list[str], conversations: int) -> Traffic:
        """``conversations`` of the users of ``bearers``, in turn."""
        limit = asyncio.Semaphore(20)

        async def one(bearer: str) -> Sender:
            async with limit:
                cid = await create_conversation(url, bearer)
                return Sender(cid, await Client().connect(url, bearer, cid))

        made = (one(bearers[i % len(bearers)]) for i in range(conversations))
        return cls(list(await asyncio.gather(*made)))

    def start(self, interval: float) -> None:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(s.run(self._stop, interval)) for s in self.senders]

    async def pause(self, timeout: float = 60) -> None:
        """Stop sending and wait until every acknowledged action is answered: nothing
        is in hand anywhere. ``start`` sends again."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        missing = await settled(self.senders, timeout)
        assert not missing, f"unanswered after {timeout}s, by conversation: {missing}"

    async def warm_up(self, replies_each: int = 2, timeout: float = 60) -> None:
        """Wait until every conversation has answered a few actions."""
        async with asyncio.timeout(timeout):
            for sender in self.senders:
                await sender.client.wait_for(lambda ev: len(replies(ev)) >= replies_each, timeout)

    async def resumed(
        self, senders: list[Sender], moment: float, timeout: float = 60
    ) -> tuple[float, ...]:
        """Per conversation, seconds from ``moment`` until it answered an action sent after
        it. Fails after ``timeout`` naming the conversations that did not, with their
        unanswered actions."""
        deadline = time.monotonic() + timeout
        while waiting := [s for s in senders if s.first_reply_after(moment) is None]:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(waiting)} of {len(senders)} conversations answered no action sent "
                    f"in the {timeout:g}s after the fault; unanswered, by conversation: "
                    f"{unanswered(waiting)}"
                )
            await asyncio.sleep(0.05)
        times = [s.first_reply_after(moment) for s in senders]
        return tuple(t - moment for t in times if t is not None)

    async def finish(
        self, name: str, redis: Redis | RedisCluster, names: Names, resume: tuple[float, ...]
    ) -> Row:
        """Stop sending, wait for every answer, account for every action, report."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        # No bare timeout: whatever is still unanswered then is accounted for below.
        await settled(self.senders, timeout=60)
        result = await tally(self.senders, redis, names)
        row = Row(
            name,
            result.sent,
            result.acked,
            result.answered,
            len(result.lost),
            len(result.duplicated),
            resume,
        )
        REPORT.append(row)
        refused = [r for s in self.senders for r in s.refused]
        if refused:
            print(f"\n{len(refused)} actions not acknowledged (so not owed), e.g. {refused[:3]}")
        print(f"\n{report_table().splitlines()[0]}\n{report_table().splitlines()[-1]}")
        assert result.lost == result.duplicated == [], (
            f"{len(result.lost)} acknowledged actions lost: {result.lost}; "
            f"{len(result.duplicated)} duplicated: {result.duplicated}"
        )
        assert result.answered == result.acked > 0
        return row

    async def close(self) -> None:
        await asyncio.gather(*(s.client.close() for s in self.senders))


async def under_traffic(
    fleet: LocalFleet, settings: Settings, count: int, interval: float, users: int = 1
) -> tuple[list[tuple[FleetProcess, str]], Traffic]:
    """A gateway, a reaper and two workers (the first one up while the conversations
    are created, and the second only once the first claimed them all), with ``count``
    clients (of ``users`` users) each sending an action every ``interval`` seconds, all
    answered at least twice already."""
    port = free_port()
    await fleet.gateway(port)
    await fleet.reaper()
    first = await fleet.worker()
    bearers = [token(settings, "alice" if users == 1 else f"user-{i}") for i in range(users)]
    traffic = await Traffic.open(f"http://127.0.0.1:{port}", bearers, count)
    await owns(settings, first[1], count)
    workers = [first, await fleet.worker()]
    traffic.start(interval)
    await traffic.warm_up()
    return workers, traffic


async def owns(settings: Settings, worker_id: str, count: int) -> None:
    """Poll (with a deadline) until the worker owns ``count`` conversations: on a loaded
    machine claims lag behind creation, and a worker started meanwhile takes a share."""
    redis = connect(settings.redis_url, settings.redis_cluster)
    try:
        async with asyncio.timeout(30):
            while len(await owned(redis, settings.names, worker_id)) < count:
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def assert_epochs_grow(redis: Redis | RedisCluster, names: Names, cids: list[str]) -> int:
    """Each log's replies (from ``tests.agents.EpochEcho``: the epoch and the worker
    process they were made under) never go back to an older epoch, and a reply by another
    process than the one before (a takeover) has a strictly greater epoch. The number
    of takeovers seen, for the caller to require some."""
    takeovers = 0
    for cid in cids:
        logged = [orjson.loads(raw) for raw in await redis.lrange(names.log(cid), 0, -1)]
        made = [
            (e["data"]["epoch"], e["data"]["pid"])
            for e in logged
            if e["source"] == "agent" and e["kind"] == "message"
        ]
        for (epoch, pid), (later, other) in itertools.pairwise(made):
            assert later >= epoch, f"{cid}: epoch {later} after {epoch}: {made}"
            if other != pid:
                takeovers += 1
                assert later > epoch, f"{cid}: taken over with the same epoch {epoch}: {made}"
    return takeovers
