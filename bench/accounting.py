"""Lost and duplicated actions, counted three ways: acks, client replies, the Redis log."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from bench.clients import Session
from broker.leases import Leases
from broker.names import Names


@dataclass
class Tally:
    sent: int = 0
    acked: int = 0
    answered: int = 0  # acked, logged once, replied once, delivered once
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    misordered: list[str] = field(default_factory=list)  # a client saw ids out of order


async def tally(sessions: list[Session], redis: Redis, names: Names, prefix: str = "") -> Tally:
    """Every acknowledged action must appear exactly once as a user message in the log,
    exactly once as an agent reply in the log, and reach its client exactly once.

    Only actions whose id starts with ``prefix`` are counted (one phase of a scenario).
    """
    result = Tally()
    for start in range(0, len(sessions), 200):
        part = sessions[start : start + 200]
        async with redis.pipeline(transaction=False) as pipe:
            for session in part:
                pipe.lrange(names.log(session.cid), 0, -1)
            logs = await pipe.execute()
        for session, raw_log in zip(part, logs, strict=True):
            _account(session, [orjson.loads(raw) for raw in raw_log], prefix, result)
    return result


def _account(session: Session, logged: list[dict[str, object]], prefix: str, result: Tally) -> None:
    if session.ids != list(range(len(session.ids))):
        result.misordered.append(session.cid)
    if [e["id"] for e in logged] != list(range(len(logged))):
        result.misordered.append(f"{session.cid} (log)")
    user: Counter[str] = Counter()
    agent: Counter[str] = Counter()
    for event in logged:
        data = event["data"]
        assert isinstance(data, dict)
        if event["source"] == "user" and event["kind"] == "message":
            user[data["action_id"]] += 1
        elif event["source"] == "agent" and event["kind"] == "message":
            agent[data["in_reply_to"]] += 1
    sent = {a for a in session.sent if a.startswith(prefix)}
    acked = [a for a in session.acked if a.startswith(prefix)]
    result.sent += len(sent)
    result.acked += len(acked)
    for action_id in acked:
        copies = (len(session.replies.get(action_id, [])), user[action_id], agent[action_id])
        if 0 in copies:
            result.lost.append(f"{action_id}: client/user/agent = {copies}")
        elif copies != (1, 1, 1):
            result.duplicated.append(f"{action_id}: client/user/agent = {copies}")
        else:
            result.answered += 1
    # Unacknowledged actions are not owed, but must not be doubled either.
    for action_id in sent - session.acked.keys():
        if user[action_id] > 1 or agent[action_id] > 1:
            result.duplicated.append(f"{action_id} (unacked): logged twice")


INCARNATIONS = 10  # of a worker, counted in what it owns


async def owned_by(redis: Redis, names: Names, worker_id: str) -> set[str]:
    """What a worker owns, over its incarnations: a busy machine may fence it, and it
    comes back as ``<id>.1``, ``<id>.2``... to claim again what it dropped."""
    ids = [worker_id] + [f"{worker_id}.{i}" for i in range(1, INCARNATIONS)]
    leases = Leases(redis, names)
    return {cid for i in ids for cid in await leases.owned_by(i)}
