"""The fleet as Redis holds it right now, for the dashboard: workers (liveness, what
they own), gateways (their connections), the conversations that are owned, owed an
owner or watched by a client, and the fleet's recent history. Read only, four round
trips, bounded in size whatever the fleet's: no SCAN, only the indexes the fleet keeps
anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast, get_args

from broker.history import Record, records
from broker.names import IndexedStatus, Names, parse_lease
from broker.redis import Client, text

SHOWN = 200  # conversations listed at most
OWNED_SHOWN = 50  # conversation ids listed per worker at most
HISTORY_SHOWN = 100  # records of the fleet's history, the newest


@dataclass(frozen=True, slots=True)
class ProcessView:
    """A worker or a gateway: ``alive`` while its liveness key exists (``ttl_ms`` left)."""

    id: str
    alive: bool
    ttl_ms: int | None
    conversations: int  # owned (worker), or with clients here (gateway)
    shown: list[str]  # some of them
    connections: int = 0  # clients connected (gateway)


@dataclass(frozen=True, slots=True)
class ConversationView:
    conversation_id: str
    user: str | None
    status: str | None
    owner: str | None  # the worker whose lease it is (alive or not)
    epoch: int | None  # the lease's fencing token
    clients: int  # connected, across gateways
    last_event_id: int
    pending_since: float | None  # owed an owner since (epoch seconds)


@dataclass(frozen=True, slots=True)
class Overview:
    now: float  # the Redis clock, epoch seconds
    workers: list[ProcessView]
    gateways: list[ProcessView]
    conversations: list[ConversationView]
    pending: int  # conversations owed an owner, in all
    history: list[Record]  # newest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def read_overview(redis: Client, names: Names) -> Overview:
    groups = names.all_groups
    # Not in the pipeline: a Redis Cluster's pipeline refuses TIME (it has no key).
    clock = await redis.time()
    async with redis.pipeline(transaction=False) as pipe:
        # Every process has a deadline and liveness in group 0 (and a copy in each other).
        pipe.zrange(names.deadlines("worker", 0), 0, -1)
        pipe.zrange(names.deadlines("gateway", 0), 0, -1)
        pipe.lrange(names.history, 0, HISTORY_SHOWN - 1)
        for group in groups:
            pipe.zrange(names.pending(group), 0, SHOWN - 1, withscores=True)
            pipe.zcard(names.pending(group))
        worker_ids, gateway_ids, history, *owed = await pipe.execute()
    pending = sorted((p for found in owed[0::2] for p in found), key=lambda p: p[1])[:SHOWN]
    pending_count = sum(owed[1::2])
    workers = [text(w) for w in worker_ids]
    gateways = [text(g) for g in gateway_ids]

    async with redis.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.pttl(names.alive("worker", worker, 0))
            for group in groups:
                pipe.scard(names.owns(worker, group))
                pipe.sscan(names.owns(worker, group), 0, count=OWNED_SHOWN)
        for gateway in gateways:
            pipe.pttl(names.alive("gateway", gateway, 0))
            for group in groups:
                pipe.hgetall(names.gateway_index(gateway, group))
        replies = iter(await pipe.execute())

    worker_views: list[ProcessView] = []
    clients: dict[str, int] = {}
    for worker in workers:
        ttl = next(replies)
        owned, some = 0, []
        for _ in groups:
            owned += next(replies)
            some += next(replies)[1]
        shown = sorted(text(c) for c in some)[:OWNED_SHOWN]
        worker_views.append(ProcessView(worker, ttl != -2, _ttl(ttl), owned, shown))
    gateway_views = []
    for gateway in gateways:
        ttl = next(replies)
        counts: dict[str, int] = {}
        for _ in groups:
            for k, v in cast(dict[bytes, bytes], next(replies)).items():
                counts[text(k)] = int(v)
        here = {k[2:]: n for k, n in counts.items() if k.startswith("c:") and n > 0}
        users = sum(n for k, n in counts.items() if k.startswith("u:"))
        for cid, n in here.items():
            clients[cid] = clients.get(cid, 0) + n
        view = ProcessView(gateway, ttl != -2, _ttl(ttl), len(here), sorted(here)[:SHOWN], users)
        gateway_views.append(view)

    since = {text(cid): score / 1000 for cid, score in pending}
    wanted = list(dict.fromkeys([*since, *(c for w in worker_views for c in w.shown), *clients]))
    conversations = await _conversations(redis, names, wanted[:SHOWN], clients, since)
    seconds, micros = clock
    return Overview(
        seconds + micros / 1e6,
        worker_views,
        gateway_views,
        conversations,
        pending_count,
        records(history),
    )


async def _conversations(
    redis: Client, names: Names, ids: list[str], clients: dict[str, int], since: dict[str, float]
) -> list[ConversationView]:
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hmget(names.meta(cid), ["user", "status"])
            pipe.get(names.lease(cid))
            pipe.llen(names.log(cid))
        replies = await pipe.execute()
    views = []
    for i, cid in enumerate(ids):
        (user, status), lease, length = replies[3 * i : 3 * i + 3]
        owner, epoch = parse_lease(text(lease)) if lease else (None, None)
        views.append(
            ConversationView(
                cid,
                text(user) if user else None,
                text(status) if status else None,
                owner,
                epoch,
                clients.get(cid, 0),
                length - 1,
                since.get(cid),
            )
        )
    return views


def _ttl(pttl: int) -> int | None:
    """Milliseconds left of a liveness key (None: gone, or no expiry)."""
    return pttl if pttl >= 0 else None


async def count_by_status(redis: Client, names: Names) -> dict[str, int]:
    """How many conversations are idle, closing, closed, and owed an owner
    (``pending``), summed over the key groups (each keeps its own indexes)."""
    statuses: tuple[IndexedStatus, ...] = get_args(IndexedStatus)
    async with redis.pipeline(transaction=False) as pipe:
        for group in names.all_groups:
            for status in statuses:
                pipe.zcard(names.by_status(status, group))
            pipe.zcard(names.pending(group))
        counts = await pipe.execute()
    kinds = [*statuses, "pending"]
    return {kind: sum(counts[i :: len(kinds)]) for i, kind in enumerate(kinds)}
