"""``fleet inspect CONVERSATION``: its record, owner and epoch, queue depth, connected
clients and last events. Read-only."""

from __future__ import annotations

import time
from typing import Any

import orjson

from broker.names import parse_lease, valid_conversation_id
from broker.redis import text
from broker.settings import Settings
from fleet.ops import Ops, OpsError, ago, run

# Record fields that hold a time, and its unit.
MILLISECONDS = ("active",)
SECONDS = ("created_at", "closed_at")


async def inspect(ops: Ops, cid: str, events: int) -> dict[str, Any]:
    """Everything ops can tell about one conversation, as JSON-ready values."""
    if not valid_conversation_id(cid):
        raise OpsError(f"{cid!r} is not a conversation id")
    n = ops.names
    async with ops.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(n.meta(cid))
        pipe.get(n.lease(cid))
        pipe.get(n.epoch(cid))
        pipe.hgetall(n.clients(cid))
        pipe.zscore(n.pending(n.group(cid)), cid)
        pipe.hgetall(n.stream(cid))
        pipe.llen(n.log(cid))
        meta, lease, epoch, clients, pending, stream, length = await pipe.execute()
    last = await ops.redis.lrange(n.log(cid), -events, -1) if events else []
    if not meta:
        raise OpsError(f"no conversation {cid} in namespace {ops.settings.namespace!r}")
    owner = None
    if lease is not None:
        worker_id, lease_epoch = parse_lease(text(lease))
        alive = bool(await ops.redis.exists(n.alive("worker", worker_id, n.group(cid))))
        owner = {"worker_id": worker_id, "epoch": lease_epoch, "alive": alive}
    broker = await ops.broker()
    by_gateway = {text(k): int(v) for k, v in clients.items()}
    return {
        "conversation_id": cid,
        "record": _record(meta),
        "owner": owner,
        "epoch": int(epoch) if epoch is not None else None,
        "queue_depth": await broker.queue_depth(cid),
        "clients": {"total": sum(by_gateway.values()), "by_gateway": by_gateway},
        "pending_since": pending / 1000 if pending is not None else None,
        "streaming": _streaming(stream),
        "events": length,
        "last_events": [orjson.loads(raw) for raw in last],
    }


def _record(meta: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for raw_key, raw_value in sorted(meta.items()):
        key, value = text(raw_key), text(raw_value)
        if key in MILLISECONDS:
            record[key] = int(value) / 1000
        elif key in SECONDS:
            record[key] = float(value)
        elif key in ("log_bytes", "turn_from"):
            record[key] = int(value)
        else:
            record[key] = value
    return record


def _streaming(stream: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not stream:
        return None
    return {
        "turn_id": text(stream[b"turn_id"]),
        "epoch": int(stream[b"epoch"]),
        "step": int(stream[b"step"]),
        "seq": int(stream[b"seq"]),
        "chars": len(text(stream.get(b"text", b""))),
    }


def render(found: dict[str, Any], now: float) -> str:
    """The inspection as text."""
    record = found["record"]
    lines = [f"conversation {found['conversation_id']}"]
    for key, value in record.items():
        shown = value
        if key in (*MILLISECONDS, *SECONDS):
            shown = f"{_when(value)} ({ago(now - value)} ago)"
        lines.append(f"  {key + ':':<12} {shown}")
    owner = found["owner"]
    if owner is None:
        lines.append(f"owner: none (epoch {found['epoch']})")
    else:
        state = "alive" if owner["alive"] else "DEAD: awaiting failover"
        lines.append(f"owner: {owner['worker_id']} ({state}), epoch {owner['epoch']}")
    depth = found["queue_depth"]
    lines.append("queue: none" if depth is None else f"queue: {depth} message(s) waiting")
    if found["pending_since"] is not None:
        lines.append(f"owed an owner since {ago(now - found['pending_since'])} ago")
    clients = found["clients"]
    per = ", ".join(f"{gw}: {count}" for gw, count in clients["by_gateway"].items())
    lines.append(f"clients: {clients['total']}" + (f" ({per})" if per else ""))
    if (streaming := found["streaming"]) is not None:
        lines.append(
            f"streaming: turn {streaming['turn_id']} step {streaming['step']}, "
            f"{streaming['chars']} chars so far (epoch {streaming['epoch']})"
        )
    shown = found["last_events"]
    lines.append(f"events: {found['events']}" + (f", the last {len(shown)}:" if shown else ""))
    for event in shown:
        data = orjson.dumps(event["data"]).decode()
        data = data if len(data) <= 80 else data[:77] + "..."
        lines.append(f"  {event['id']:>6} {event['source']:<6} {event['kind']:<16} {data}")
    return "\n".join(lines)


def _when(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_seconds))


async def show_inspection(settings: Settings, cid: str, as_json: bool, events: int) -> int:
    async def show(ops: Ops) -> int:
        found = await inspect(ops, cid, events)
        if as_json:
            print(orjson.dumps(found).decode())
        else:
            print(render(found, await ops.now_ms() / 1000))
        return 0

    return await run(settings, "inspect", show)
