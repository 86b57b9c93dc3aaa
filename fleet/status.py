"""``fleet status``: gateways, workers and reapers, conversations by status, the
dispatch backlog, webhook deliveries waiting, dead letters and the fleet's recent
history; ``--json`` for tools, ``--watch`` to follow it.

Read-only: Redis reads and passive queue checks, nothing declared or written.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import orjson

from broker.events import ProcessInfo, decode_process_info
from broker.history import History, Record
from broker.names import Role
from broker.overview import count_by_status
from broker.redis import text
from broker.settings import Settings
from fleet.ops import Ops, ago, run, table

CLEAR_SCREEN = "\x1b[H\x1b[2J"
RECENT = 10  # records of the fleet's history shown, the newest (``--json``: all kept)


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One process in a role's index: alive (its liveness key is there) or dead for a
    while (not yet forgotten by a reaper)."""

    process_id: str
    alive: bool
    dead_for: float | None  # seconds since its deadline passed, when dead
    info: ProcessInfo | None  # what it registered (None: an earlier version)
    owned: int | None = None  # workers: conversations they own
    connections: int | None = None  # gateways: Socket.IO clients connected
    leader: bool = False  # reapers: the one that acts

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self.info) if self.info is not None else {}
        found.pop("process_id", None)
        found.pop("role", None)
        return {
            "id": self.process_id,
            "alive": self.alive,
            "dead_for_s": self.dead_for,
            **found,
            "owned": self.owned,
            "connections": self.connections,
            "leader": self.leader,
        }


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """A fleet at one moment, as ``fleet status`` shows it."""

    namespace: str
    at: float  # epoch seconds (Redis clock)
    gateways: list[ProcessStatus]
    workers: list[ProcessStatus]
    reapers: list[ProcessStatus]
    leader: str | None  # the reaper that leads
    conversations: dict[str, int]  # status -> how many
    dispatch_backlog: int | None  # None: no dispatch queue (no fleet ever ran here)
    dead_letters: int = 0  # messages in the fleet's dead-letter queues
    webhooks_waiting: int | None = None  # in the webhook outbox (None: no outbox)
    history: list[Record] = field(default_factory=list)  # newest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "at": self.at,
            "gateways": [p.to_dict() for p in self.gateways],
            "workers": [p.to_dict() for p in self.workers],
            "reapers": [p.to_dict() for p in self.reapers],
            "leader": self.leader,
            "conversations": self.conversations,
            "dispatch_backlog": self.dispatch_backlog,
            "dead_letters": self.dead_letters,
            "webhooks_waiting": self.webhooks_waiting,
            "history": [record.to_dict() for record in self.history],
        }


async def gather(ops: Ops) -> FleetStatus:
    """Read the fleet's state: a few Redis round trips and one passive check per queue."""
    n = ops.names
    now = await ops.now_ms()
    leader = await ops.redis.get(n.reaper_leader)
    leader_id = text(leader) if leader is not None else None
    gateways = await _processes(ops, "gateway", now)
    workers = await _processes(ops, "worker", now)
    reapers = await _processes(ops, "reaper", now, leader_id)
    counts = await count_by_status(ops.redis, n)
    running = sum(w.owned or 0 for w in workers)
    broker = await ops.broker()
    backlog = await broker.dispatch_backlog()
    dead = [await broker.passive_depth(queue) for queue in n.dead_letter_queues]
    webhooks, _ = await broker.webhook_backlog()
    return FleetStatus(
        namespace=ops.settings.namespace,
        at=now / 1000,
        gateways=gateways,
        workers=workers,
        reapers=reapers,
        leader=leader_id,
        conversations={
            "running": running,
            **{status: counts[status] for status in ("idle", "closing", "closed")},
        },
        dispatch_backlog=backlog,
        dead_letters=sum(depth or 0 for depth in dead),
        webhooks_waiting=webhooks,
        history=await History(ops.redis, n).recent(),
    )


async def _processes(
    ops: Ops, role: Role, now_ms: int, leader: str | None = None
) -> list[ProcessStatus]:
    n = ops.names
    entries = cast(
        list[tuple[bytes, float]],
        # Every process has a deadline and liveness in group 0 (and a copy in each other).
        await ops.redis.zrange(n.deadlines(role, 0), 0, -1, withscores=True),
    )
    ids = [text(raw) for raw, _ in entries]
    async with ops.redis.pipeline(transaction=False) as pipe:
        for process_id in ids:
            pipe.get(n.alive(role, process_id, 0))
            if role == "worker":
                for group in n.all_groups:
                    pipe.scard(n.owns(process_id, group))
            elif role == "gateway":
                for group in n.all_groups:
                    pipe.hgetall(n.gateway_index(process_id, group))
        replies = await pipe.execute()
    per = 1 if role == "reaper" else 1 + n.groups
    found = []
    for i, (process_id, (_, deadline)) in enumerate(zip(ids, entries, strict=True)):
        value, *extra = replies[i * per : (i + 1) * per]
        alive = value is not None
        found.append(
            ProcessStatus(
                process_id=process_id,
                alive=alive,
                dead_for=None if alive else max(0.0, (now_ms - deadline) / 1000),
                info=decode_process_info(value),
                owned=sum(extra) if role == "worker" else None,
                connections=sum(map(_connections, extra)) if role == "gateway" else None,
                leader=role == "reaper" and process_id == leader,
            )
        )
    return found


def _connections(index: dict[bytes, bytes]) -> int:
    """A gateway's clients: its presence index counts them per user (``u:`` fields)."""
    return sum(int(count) for key, count in index.items() if key.startswith(b"u:"))


def render(status: FleetStatus) -> str:
    """The status as text, one section per kind of process."""
    lines = [f"fleet {status.namespace!r} at {_utc(status.at)}"]
    lines.append(f"gateways: {len(status.gateways)}")
    if status.gateways:
        rows = [
            [g.process_id, _info(g, "address"), str(g.connections), _liveness(g)]
            for g in status.gateways
        ]
        lines += table(["ID", "ADDRESS", "CONNECTIONS", "LIVENESS"], rows)
    lines.append(f"workers: {len(status.workers)}")
    if status.workers:
        rows = [
            [
                w.process_id,
                _info(w, "incarnation"),
                str(w.owned),
                _info(w, "capacity"),
                _utilisation(w),
                _liveness(w),
            ]
            for w in status.workers
        ]
        header = ["ID", "INCARNATION", "OWNED", "CAPACITY", "UTILISATION", "LIVENESS"]
        lines += table(header, rows)
    leads = f" (leader: {status.leader})" if status.leader else " (no leader)"
    lines.append(f"reapers: {len(status.reapers)}{leads}")
    if status.reapers:
        rows = [
            [r.process_id, "leader" if r.leader else "standby", _liveness(r)]
            for r in status.reapers
        ]
        lines += table(["ID", "ROLE", "LIVENESS"], rows)
    counts = ", ".join(f"{count} {name}" for name, count in status.conversations.items())
    lines.append(f"conversations: {counts}")
    if status.dispatch_backlog is None:
        lines.append("dispatch backlog: no dispatch queue (no fleet has run in this namespace)")
    else:
        lines.append(f"dispatch backlog: {status.dispatch_backlog} claim request(s)")
    if status.webhooks_waiting is None:
        lines.append("webhooks: no webhook outbox (webhooks have not run in this namespace)")
    else:
        lines.append(f"webhooks: {status.webhooks_waiting} delivery(ies) waiting")
    lines.append(f"dead letters: {status.dead_letters}")
    shown = status.history[:RECENT]
    lines.append("recent history, newest first:" if shown else "recent history: none")
    lines += [f"  {_utc(record.at)}  {record.describe()}" for record in shown]
    return "\n".join(lines)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _liveness(process: ProcessStatus) -> str:
    if process.alive:
        return "alive"
    return f"dead for {ago(process.dead_for or 0)}"


def _info(process: ProcessStatus, name: str) -> str:
    value = getattr(process.info, name, None) if process.info is not None else None
    return "?" if value is None else str(value)


def _utilisation(worker: ProcessStatus) -> str:
    capacity = worker.info.capacity if worker.info is not None else None
    if not capacity or worker.owned is None:
        return "?"
    return f"{100 * worker.owned / capacity:.1f}%"


async def show_status(
    settings: Settings, as_json: bool = False, watch: bool = False, interval: float = 2.0
) -> int:
    """Print the fleet's state (again every ``interval`` with ``watch``); 1 and one
    line saying which when a server is down."""

    async def show(ops: Ops) -> int:
        while True:
            status = await gather(ops)
            if as_json:
                print(orjson.dumps(status.to_dict()).decode(), flush=True)
            else:
                clear = CLEAR_SCREEN if watch and sys.stdout.isatty() else ""
                print(clear + render(status), flush=True)
            if not watch:
                return 0
            await asyncio.sleep(interval)
            if not as_json and not sys.stdout.isatty():
                print(flush=True)

    return await run(settings, "status", show)
