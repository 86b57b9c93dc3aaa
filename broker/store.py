"""Conversation records and their event logs in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import orjson

from broker import metrics, scripts
from broker.archive import Archive
from broker.errors import LeaseLost, Unavailable
from broker.events import Action, CloseMarker, QueueItem, StreamFrame
from broker.names import Names
from broker.ratelimit import Rate
from broker.redis import Client, one_of, text
from broker.settings import BusyPolicy, OverLimitPolicy

SETTLE_POLL = 0.005  # seconds between looks at a queue being deleted
# Looking an action id or a dedupe key up in the archive and asking again can meet a
# move that just finished (only while no owner runs the conversation): a few tries.
ARCHIVE_LOOKUPS = 5
# How many of its last events a new owner publishes again when it took over from one
# that died: that one may have logged its last batches without their messages leaving
# its process (a conversation logs one batch at a time; a batch is a few events).
UNPUBLISHED = 8

# "purging": ``fleet purge`` is deleting it (see lua/purge.lua); it takes no input.
Status = Literal["idle", "running", "closing", "closed", "purging"]
# See lua/admit.lua for what each outcome means.
AdmissionOutcome = Literal[
    "ok",
    "rate_limited",
    "conflict",
    "busy",
    "log_full",
    "no_request",
    "bad_choice",
    "over_limit",
    "closed",
    "unknown",
]

# Any id a reader asks to read after is taken as at most this: ids never come near,
# and the script reading the log counts in doubles, exact only below 2**53.
MAX_AFTER = 2**52


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation's record: whose it is, who runs it, how far its log goes, the
    agent's last logged state (None before its first) and how many clients are
    connected to it across every gateway."""

    conversation_id: str
    user: str
    status: Status
    owner: str | None
    created_at: float
    last_event_id: int
    agent_state: str | None = None
    connections: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "conversation_id": self.conversation_id,
            "status": self.status,
            "owner": self.owner,
            "created_at": self.created_at,
            "last_event_id": self.last_event_id,
            "agent_state": self.agent_state,
            "connections": self.connections,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """What each user may do: run ``conversations`` at once (beyond that, ``policy``),
    at ``rate`` requests (each ``rate_bytes`` of payload counting as one more); and how
    long a conversation's log may grow."""

    conversations: int
    policy: OverLimitPolicy
    rate: Rate
    rate_bytes: int = 4096
    log_events: int = 100_000
    log_bytes: int = 64 * 2**20

    def cost(self, payload_bytes: int) -> int:
        return 1 + payload_bytes // self.rate_bytes


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of ``Store.admit``: see ``lua/admit.lua``."""

    outcome: AdmissionOutcome
    needs_owner: bool
    evicted: str | None
    retry_after_ms: int = 0
    settling: bool = False  # its queue is being deleted: ``settled`` before queueing


@dataclass(frozen=True, slots=True)
class TurnState:
    """What a new owner needs to resume a conversation's turns."""

    on_busy: BusyPolicy
    since: list[bytes]  # the log from the oldest unfinished turn's first event
    next_id: int = 0  # the id the next event logged gets
    # The last events logged (in Redis), which the last owner may have died before
    # publishing: published again, gateways drop the ids they delivered already
    # (read only for a new owner that took over a dead holder's lease).
    tail: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RequestChange:
    """An approval request an append opens (answerable from then on, with one of its
    ``options``) or closes (its turn ended unanswered)."""

    open: str = ""
    options: Sequence[str] = ()
    close: str = ""

    def args(self) -> list[str]:
        return [self.open, orjson.dumps(list(self.options)).decode(), self.close]


NO_REQUEST_CHANGE = RequestChange()


@dataclass(frozen=True, slots=True)
class Appended:
    """What a fenced append logged (or had logged before, when ``duplicate``)."""

    first_id: int
    entries: list[bytes]
    duplicate: bool


class Store:
    """Create, find and list conversations; append to and read their logs.

    With an ``archive`` (history in PostgreSQL), a log's ids below ``meta.archived``
    were moved there (``broker.archiver``): reads and dedupe look there for them.
    """

    def __init__(
        self,
        redis: Client,
        names: Names,
        archive: Archive | None = None,
        wait_replicas: int = 0,
    ) -> None:
        self.redis = redis
        self.names = names
        self.archive = archive
        # Appends reach this many replicas before they count (see scripts.Replicated).
        self._batch = scripts.Batch(redis)
        self._append = scripts.Replicated(
            self._batch, scripts.load(redis, names, "append"), wait_replicas
        )
        self._tail = scripts.load(redis, names, "tail")
        self._admit = scripts.load(redis, names, "admit")
        self._close = scripts.load(redis, names, "close")
        self._stream = scripts.load(redis, names, "stream")

    async def create(
        self,
        cid: str,
        user: str,
        limits: Limits,
        on_busy: BusyPolicy,
        size: int = 0,
        record: Mapping[str, str] | None = None,
    ) -> Admission:
        """Record a new conversation of ``user``'s (its first input ``size`` bytes; more
        fields of its record in ``record``), admitted under the limits; when it is not
        admitted, nothing is left of it."""
        return await self._admission(
            cid, "create", user, limits, size=size, on_busy=on_busy, record=record or {}
        )

    async def admit(
        self, cid: str, user: str, limits: Limits, action: Action, size: int
    ) -> Admission:
        """Admit ``action`` (``size`` bytes) to ``cid`` under the user's limits, marking
        the conversation active."""
        return await self._admission(cid, "act", user, limits, action, size)

    async def admit_query(self, cid: str, user: str, limits: Limits, size: int) -> Admission:
        """Admit an owner query (``size`` bytes) as an action is admitted, but whatever
        the log's size: a query logs nothing."""
        return await self._admission(cid, "act", user, limits, size=size, kind="query")

    async def _admission(
        self,
        cid: str,
        mode: Literal["create", "act"],
        user: str,
        limits: Limits,
        action: Action | None = None,
        size: int = 0,
        on_busy: BusyPolicy = "enqueue",
        kind: str = "",
        record: Mapping[str, str] | None = None,
    ) -> Admission:
        n, group = self.names, self.names.group(cid)
        if group != n.group(user):  # a user's conversations are in the user's group
            if mode == "create":
                raise ValueError(f"{cid} is not in {user}'s group: Names.new_conversation_id")
            return Admission("unknown", False, None)
        keys = [
            n.meta(cid),
            n.running(user),
            n.user_conversations(user),
            n.lease(cid),
            n.rate(user),
            n.log(cid),
            n.actions(cid),
            n.pending(group),
            n.approvals(cid),
            n.deleting(cid),
            n.by_status("idle", group),
            n.by_status("closing", group),
            n.full(group),
        ]
        checked, digest = "", ""
        for _ in range(ARCHIVE_LOOKUPS):
            args = [
                cid,
                mode,
                user,
                limits.conversations,
                limits.policy,
                *limits.rate.args(),
                limits.cost(size),
                action.action_id if action else "",
                action.digest() if action else "",
                limits.log_events,
                limits.log_bytes,
                action.kind if action else kind,
                on_busy,
                action.request_id if action else "",
                action.choice if action else "",
                checked,
                digest,
                *(part for pair in (record or {}).items() for part in pair),
            ]
            outcome, needs_owner, evicted, wait_ms, *rest = await self._batch.call(
                self._admit, keys, args
            )
            if outcome != b"archived":
                return Admission(
                    one_of(outcome, get_args(AdmissionOutcome)),
                    bool(needs_owner),
                    text(evicted) or None,
                    int(wait_ms),
                    bool(rest and rest[0]),
                )
            # The action id may have been admitted before the history moved: was it?
            assert action is not None
            checked = text(rest[1])
            digest = await self._archived().digest(cid, action.action_id) or ""
        raise Unavailable("the conversation's history kept moving; retry")

    def _archived(self) -> Archive:
        """The archive, which a conversation with archived history needs."""
        if self.archive is None:
            raise Unavailable("this conversation's history is archived: set FLEET_POSTGRES_URL")
        return self.archive

    async def settled(self, cid: str, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until the passivated conversation's queue
        is deleted, so that input queued next declares it again rather than race the
        deletion (a message routed to a queue as it is deleted is lost)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while await self.redis.exists(self.names.deleting(cid)):  # noqa: ASYNC110
                    await asyncio.sleep(SETTLE_POLL)  # a few ms, and rare: not worth a pub/sub

    async def close(self, cid: str, user: str, reason: str) -> Status | None:
        """Begin closing for good; the status it had (None: no such conversation)."""
        n, group = self.names, self.names.group(cid)
        if group != n.group(user):  # not the user's: theirs are in the user's group
            return None
        keys = [
            n.meta(cid),
            n.running(user),
            n.pending(group),
            n.by_status("idle", group),
            n.by_status("closing", group),
        ]
        before = await self._close(keys=keys, args=[cid, reason])
        return one_of(before, get_args(Status)) if before else None

    async def get(self, cid: str) -> ConversationRecord | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.names.meta(cid))
            pipe.llen(self.names.log(cid))
            pipe.hvals(self.names.clients(cid))  # per gateway; the dead ones are forgotten
            meta, length, clients = await pipe.execute()
        if not meta:
            return None
        owner = meta.get(b"owner")
        agent_state = meta.get(b"agent_state")
        return ConversationRecord(
            conversation_id=cid,
            user=meta[b"user"].decode(),
            status=one_of(meta[b"status"], get_args(Status)),
            owner=owner.decode() if owner else None,
            created_at=float(meta[b"created_at"]),
            last_event_id=int(meta.get(b"archived", 0)) + length - 1,
            agent_state=agent_state.decode() if agent_state else None,
            connections=sum(int(count) for count in clients),
        )

    async def may_reopen(self, cid: str, item: QueueItem) -> bool:
        """Whether ``item`` may declare again the queue of ``cid``, deleted when it was
        passivated: not once it is closed, nor (but for its close marker) closing."""
        status = await self.redis.hget(self.names.meta(cid), "status")
        return status in (b"idle", b"running") or (
            status == b"closing" and isinstance(item, CloseMarker)
        )

    async def owner_of(self, cid: str) -> str | None:
        """The user a conversation belongs to, or None when there is no such conversation."""
        user = await self.redis.hget(self.names.meta(cid), "user")
        return text(user) if user else None

    async def list_ids(self, user: str, after: str | None, limit: int) -> list[str]:
        """A user's conversation ids, oldest first, starting after the id ``after``."""
        key = self.names.user_conversations(user)
        start = 0
        if after is not None:
            rank = await self.redis.zrank(key, after)
            if not isinstance(rank, int):
                return []
            start = rank + 1
        ids = await self.redis.zrange(key, start, start + limit - 1)
        return [text(i) for i in cast(list[bytes], ids)]

    async def read(self, cid: str, after: int = -1, limit: int | None = None) -> list[bytes]:
        """Logged events with ``id > after`` (at most ``limit``), oldest first, as their
        JSON: from the archive, then from Redis, seamlessly."""
        after = min(after, MAX_AFTER)
        keys = [self.names.meta(cid), self.names.log(cid)]
        base, tail = await self._tail(keys=keys, args=[after, -1 if limit is None else limit])
        if after + 1 >= base:
            return cast(list[bytes], tail)
        # Redis said where it starts before the archive is read: every id below that
        # was committed there before Redis let go of it.
        upto = base - 1 if limit is None else min(base - 1, after + limit)
        archived = await self._archived().read(cid, after, upto)
        if len(archived) != upto - after:
            raise RuntimeError(f"archived history of {cid} lacks events in ({after}, {upto}]")
        return archived + cast(list[bytes], tail)

    async def append(
        self,
        cid: str,
        lease: str,
        bodies: Sequence[bytes],
        once: str = "",
        turn_from: str = "",
        logged_step: str = "",
        agent_state: str = "",
        requests: RequestChange = NO_REQUEST_CHANGE,
    ) -> Appended:
        """Log ``bodies`` under ``lease``; raise ``LeaseLost`` if the lease moved on.
        ``turn_from``, ``logged_step``, ``agent_state`` and ``requests``: see
        ``lua/append.lua``."""
        n = self.names
        keys = [n.lease(cid), n.log(cid), n.once(cid), n.meta(cid), n.stream(cid), n.approvals(cid)]

        async def call(checked: str) -> list[Any]:
            args = [lease, once, checked, turn_from, logged_step, agent_state]
            reply: list[Any] = await self._append(
                keys=keys, args=[*args, *requests.args(), *bodies]
            )
            return reply

        reply = await call("")
        if reply[0] == -4:
            # The key may be among the archived ones. While our lease holds no move can
            # run, so what the archive says stays true until we call again.
            found = await self._archived().once(cid, once)
            if found is not None:
                reply = [-3, *found]
            else:
                reply = await call("1")
        code = reply[0]
        if code == -1:
            metrics.FENCED_WRITES.inc()
            raise LeaseLost(f"lease {lease} of {cid} is no longer current")
        if code == -2:
            return Appended(first_id=reply[1], entries=reply[2:], duplicate=True)
        if code == -3:  # logged before, and archived since
            first, count = reply[1], reply[2]
            return Appended(first, await self.read(cid, first - 1, count), duplicate=True)
        return Appended(first_id=code, entries=[], duplicate=False)

    async def turns(self, cid: str, took_over: bool = False) -> TurnState:
        """Where the oldest unfinished turn starts, what the conversation does with
        input while busy, and every event since that turn (empty when none is); when
        ``took_over`` (from a holder that died), the last events too."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.names.meta(cid), "turn_from", "on_busy", "archived")
            pipe.llen(self.names.log(cid))
            if took_over:
                pipe.lrange(self.names.log(cid), -UNPUBLISHED, -1)
            (turn_from, on_busy, archived), length, *tails = await pipe.execute()
        tail: list[bytes] = tails[0] if tails else []
        policy: BusyPolicy = one_of(on_busy, get_args(BusyPolicy)) if on_busy else "enqueue"
        next_id = int(archived or 0) + length  # the archived part comes first
        if turn_from is None:
            return TurnState(policy, [], next_id, tail)
        return TurnState(policy, await self.read(cid, int(turn_from) - 1), next_id, tail)

    async def stream(self, cid: str, lease: str, frame: StreamFrame) -> bool:
        """Keep the snapshot of a streaming step (fenced); False when the lease moved on."""
        args: list[str | int] = [
            lease,
            frame.turn_id,
            frame.epoch,
            frame.step,
            frame.seq,
            frame.delta,
        ]
        keys = [self.names.lease(cid), self.names.stream(cid)]
        return bool(await self._batch.call(self._stream, keys, args))

    async def streaming(self, cid: str) -> StreamFrame | None:
        """The step being streamed, as one frame holding its whole text so far."""
        snapshot = await self.redis.hgetall(self.names.stream(cid))
        if not snapshot:
            return None
        return StreamFrame(
            conversation_id=cid,
            turn_id=text(snapshot[b"turn_id"]),
            epoch=int(snapshot[b"epoch"]),
            step=int(snapshot[b"step"]),
            seq=int(snapshot[b"seq"]),
            delta=text(snapshot.get(b"text", b"")),
            ts=time.time(),
        )
