"""``fleet conversations --stuck``: conversations that need a human.

- ``closing``: closing for good for longer than ``FLEET_STUCK_AFTER`` (its owner cannot
  finish it: input keeps arriving, or no worker can claim it);
- ``no_owner``: input waits in its queue, no live worker owns it, and its last input
  was admitted longer ago than ``FLEET_STUCK_AFTER`` (no worker has room, its user is
  over the limit, or no reaper runs to move a dead worker's conversations);
- ``log_full``: input was refused because its log reached ``FLEET_MAX_LOG_EVENTS`` or
  ``FLEET_MAX_LOG_BYTES`` (still over them).

Found through the fleet's indexes (closing, pending, dead workers' owns, full), never
by a scan. Read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal, cast

import orjson

from broker.names import parse_lease
from broker.redis import text
from broker.settings import Settings
from fleet.ops import Ops, ago, run, table

StuckKind = Literal["closing", "no_owner", "log_full"]
# At most this many candidates of each kind are looked at.
LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Stuck:
    """A conversation that needs a human, why, and since when."""

    kind: StuckKind
    conversation_id: str
    user: str
    status: str
    since: float  # epoch seconds
    for_s: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def find_stuck(ops: Ops) -> list[Stuck]:
    """Every stuck conversation, by kind, the longest stuck first."""
    now = await ops.now_ms()
    found = await _closing(ops, now) + await _without_owner(ops, now) + await _full(ops, now)
    return sorted(found, key=lambda s: (s.kind, -s.for_s))


async def _closing(ops: Ops, now: int) -> list[Stuck]:
    cutoff = now - int(ops.settings.stuck_after * 1000)
    entries = await _range(ops, partial(ops.names.by_status, "closing"), cutoff)
    found = []
    for cid, since in entries:
        meta, owner, alive = await _owner(ops, cid)
        if meta.get("status") != "closing":
            continue
        depth = await (await ops.broker()).queue_depth(cid)
        who = "no owner" if owner is None else f"owner {owner} ({'alive' if alive else 'dead'})"
        detail = f"{who}, {depth or 0} message(s) queued, reason: {meta.get('reason', '?')}"
        found.append(_stuck("closing", cid, meta, since, now, detail))
    return found


async def _without_owner(ops: Ops, now: int) -> list[Stuck]:
    n = ops.names
    candidates = {cid for cid, _ in await _range(ops, n.pending, now)}
    for group in n.all_groups:
        for worker_id, _ in await _range(ops, partial(n.deadlines, "worker"), now, [group]):
            if not await ops.redis.exists(n.alive("worker", worker_id, group)):
                members = await ops.redis.srandmember(n.owns(worker_id, group), LIMIT)
                candidates |= {text(m) for m in cast(list[bytes], members)}
    cutoff = now - int(ops.settings.stuck_after * 1000)
    found = []
    for cid in sorted(candidates):
        meta, owner, alive = await _owner(ops, cid)
        active = int(meta.get("active", "0"))
        if alive or meta.get("status") not in ("idle", "running") or active > cutoff:
            continue
        depth = await (await ops.broker()).queue_depth(cid)
        if not depth:
            continue
        who = "no owner" if owner is None else f"owner {owner} is dead"
        detail = f"{depth} message(s) queued, {who}"
        found.append(_stuck("no_owner", cid, meta, active, now, detail))
    return found


async def _full(ops: Ops, now: int) -> list[Stuck]:
    n, settings = ops.names, ops.settings
    found = []
    for cid, since in await _range(ops, n.full, now):
        async with ops.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(n.meta(cid))
            pipe.llen(n.log(cid))
            raw, events = await pipe.execute()
        meta = {text(k): text(v) for k, v in raw.items()}
        size = int(meta.get("log_bytes", "0"))
        if not meta or (events < settings.max_log_events and size < settings.max_log_bytes):
            continue  # deleted, or a cap was raised since
        detail = (
            f"{events} events, {size} bytes "
            f"(caps {settings.max_log_events} events, {settings.max_log_bytes} bytes)"
        )
        found.append(_stuck("log_full", cid, meta, since, now, detail))
    return found


async def _range(
    ops: Ops, key: Callable[[int], str], until_ms: int, groups: Iterable[int] | None = None
) -> list[tuple[str, int]]:
    """Members of a sorted set with a score up to ``until_ms``: of each key group's
    (``key(group)``), or of those ``groups``."""
    found = []
    for group in ops.names.all_groups if groups is None else groups:
        entries = cast(
            list[tuple[bytes, float]],
            await ops.redis.zrangebyscore(key(group), "-inf", until_ms, 0, LIMIT, withscores=True),
        )
        found += [(text(member), int(score)) for member, score in entries]
    return found


async def _owner(ops: Ops, cid: str) -> tuple[dict[str, str], str | None, bool]:
    """The record, the lease holder (if any) and whether it is alive."""
    n = ops.names
    async with ops.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(n.meta(cid))
        pipe.get(n.lease(cid))
        raw, lease = await pipe.execute()
    meta = {text(k): text(v) for k, v in raw.items()}
    if lease is None:
        return meta, None, False
    owner, _ = parse_lease(text(lease))
    return meta, owner, bool(await ops.redis.exists(n.alive("worker", owner, n.group(cid))))


def _stuck(
    kind: StuckKind, cid: str, meta: dict[str, str], since_ms: int, now_ms: int, detail: str
) -> Stuck:
    return Stuck(
        kind=kind,
        conversation_id=cid,
        user=meta.get("user", "?"),
        status=meta.get("status", "?"),
        since=since_ms / 1000,
        for_s=max(0, now_ms - since_ms) / 1000,
        detail=detail,
    )


def render(found: list[Stuck]) -> str:
    if not found:
        return "no stuck conversations"
    rows = [[s.kind, s.conversation_id, s.user, s.status, ago(s.for_s), s.detail] for s in found]
    header = ["KIND", "CONVERSATION", "USER", "STATUS", "FOR", "DETAIL"]
    return "\n".join([f"{len(found)} stuck conversation(s)", *table(header, rows)])


async def show_stuck(settings: Settings, as_json: bool) -> int:
    async def show(ops: Ops) -> int:
        found = await find_stuck(ops)
        if as_json:
            print(orjson.dumps([s.to_dict() for s in found]).decode())
        else:
            print(render(found))
        return 0

    return await run(settings, "conversations", show)
