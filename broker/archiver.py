"""The move of a passivated or closed conversation's history from Redis to PostgreSQL.

Copy, then trim: the events Redis holds (with their dedupe keys and action digests)
are inserted into the archive in one transaction, rows already there skipped; once
that is committed, ``lua/archived.lua`` drops them from Redis and raises
``meta.archived`` (where Redis starts), only if the conversation is still passivated
or closed and nothing changed since the copy began. A mover killed at any point
leaves the history whole in Redis, perhaps in both places, never in neither, and the
conversation in the index of those owed a move (``Names.archive_owed``), where the
reaper finds it; two movers at once copy the same rows and one of them trims.

Who moves: the worker that passivates or closes a conversation, right after (the
work spreads over the workers and memory is freed at once); the leading reaper for
moves owed longer than ``archive_retry_after`` (a mover died, PostgreSQL was down).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, cast, get_args

import structlog

from broker import metrics, scripts
from broker.archive import Archive
from broker.names import Names
from broker.redis import Client, one_of, text

log = structlog.get_logger()

# See lua/archived.lua.
ArchiveOutcome = Literal["archived", "running", "stale", "changed"]
PAGE = 1000  # events per read from Redis and per INSERT
CONCURRENCY = 4  # moves at once per process
ID_PREFIX = b'{"id":'


class _Moved(Exception):
    """The list no longer holds what the snapshot said: another mover finished first."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A conversation's record and Redis-held history as one instant saw them."""

    status: str | None
    leased: bool
    archived: int  # the first id Redis holds
    active: str  # meta.active: changes with every admitted input
    length: int
    once: dict[bytes, bytes]
    actions: dict[bytes, bytes]

    @property
    def movable(self) -> bool:
        return self.status in ("idle", "closed") and not self.leased


class Archiver:
    """Moves conversations' history to the archive; owns the moves it runs in the background."""

    def __init__(
        self, redis: Client, names: Names, archive: Archive, role: Literal["worker", "reaper"]
    ) -> None:
        self.role = role  # whose metrics count the moves
        self.redis = redis
        self.names = names
        self.archive = archive
        self._archived = scripts.load(redis, names, "archived")
        self._owed = scripts.load(redis, names, "owed")
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()

    async def move(self, cid: str) -> ArchiveOutcome:
        """Move what Redis holds of ``cid``'s history, if it is passivated or closed."""
        snapshot = await self._snapshot(cid)
        copied = 0
        if snapshot.movable:
            try:
                pages = self._pages(cid, snapshot)
                copied = await self.archive.insert(cid, pages, snapshot.once, snapshot.actions)
            except _Moved:
                return "stale"
        outcome = await self._trim(cid, snapshot, copied)
        if outcome == "archived":
            metrics.HISTORY_ARCHIVED[self.role].inc(copied)
            log.info("history_archived", conversation_id=cid, events=copied)
        return outcome

    async def _snapshot(self, cid: str) -> Snapshot:
        n = self.names
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(n.meta(cid), "status", "archived", "active")
            pipe.exists(n.lease(cid))
            pipe.llen(n.log(cid))
            pipe.hgetall(n.once(cid))
            pipe.hgetall(n.actions(cid))
            (status, archived, active), leased, length, once, actions = await pipe.execute()
        return Snapshot(
            text(status) if status else None,
            bool(leased),
            int(archived or 0),
            text(active) if active else "",
            length,
            once,
            actions,
        )

    async def _pages(self, cid: str, snapshot: Snapshot) -> AsyncIterator[list[tuple[int, bytes]]]:
        """The snapshot's events, ``(id, JSON)``, a page at a time; each checked to be
        the id it should be (the list only changes under a mover when another trims it)."""
        for start in range(0, snapshot.length, PAGE):
            stop = min(start + PAGE, snapshot.length)
            entries = cast(
                list[bytes], await self.redis.lrange(self.names.log(cid), start, stop - 1)
            )
            page = [(event_id(entry), entry) for entry in entries]
            expected = list(range(snapshot.archived + start, snapshot.archived + stop))
            if [i for i, _ in page] != expected:
                raise _Moved(cid)
            yield page

    async def _trim(self, cid: str, snapshot: Snapshot, copied: int) -> ArchiveOutcome:
        """Drop from Redis what was copied (``lua/archived.lua``): the step a crash
        between copy and trim leaves owed."""
        n = self.names
        keys = [n.meta(cid), n.lease(cid), n.log(cid), n.once(cid), n.actions(cid)]
        keys.append(n.archive_owed(n.group(cid)))
        args: list[str | int] = [cid, snapshot.archived, copied, snapshot.active]
        return one_of(await self._archived(keys=keys, args=args), get_args(ArchiveOutcome))

    def soon(self, cid: str) -> None:
        """Move ``cid``'s history in the background (a few at a time); a failure leaves
        it owed, for the reaper."""
        task = asyncio.create_task(self._move_quietly(cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _move_quietly(self, cid: str) -> None:
        async with self._slots:
            try:
                await self.move(cid)
            except Exception as exc:
                log.warning("archive_failed", conversation_id=cid, error=repr(exc))

    async def owed(self, older_than: float, limit: int = 100) -> list[str]:
        """Conversations owed a move for more than ``older_than`` seconds (at most
        ``limit`` per key group); they count as tried again now."""
        args = [int(older_than * 1000), limit]
        n = self.names
        found = await asyncio.gather(
            *(self._owed(keys=[n.archive_owed(g)], args=args) for g in n.all_groups)
        )
        return [text(cid) for cids in found for cid in cids]

    async def sweep(self, older_than: float, limit: int = 100) -> int:
        """Do the moves owed for longer than ``older_than`` (a few at a time); how many
        were done."""
        cids = await self.owed(older_than, limit)
        outcomes = await asyncio.gather(*(self._bounded(cid) for cid in cids))
        return sum(outcome == "archived" for outcome in outcomes)

    async def _bounded(self, cid: str) -> ArchiveOutcome | None:
        async with self._slots:
            try:
                return await self.move(cid)
            except Exception as exc:  # still owed: tried again after older_than
                log.warning("archive_failed", conversation_id=cid, error=repr(exc))
                return None

    async def close(self) -> None:
        """Stop the moves under way (each is safe to cut short: it stays owed)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def event_id(entry: bytes) -> int:
    """The id of a logged event, from its JSON's start (``{"id":N,``, see lua/append.lua)."""
    if not entry.startswith(ID_PREFIX):
        raise ValueError(f"not a logged event: {entry[:20]!r}")
    return int(entry[len(ID_PREFIX) : entry.index(b",", len(ID_PREFIX))])
