"""``fleet drain WORKER``: ask a worker, wherever it runs, to drain and exit as SIGTERM
would (stop claiming, finish what it holds, release and re-dispatch its conversations).

The request is a short-lived Redis key that the worker's heartbeat reads (no extra
round trip); by default the command then waits until the worker has left the fleet.
"""

from __future__ import annotations

import asyncio

from broker.settings import Settings
from fleet.ops import Ops, OpsError, run

POLL = 0.2
# How much longer than a worker's drain grace the request is kept, and waited for.
SLACK = 30.0


async def drain(ops: Ops, worker_id: str, wait: bool) -> int:
    n, settings = ops.names, ops.settings
    if not await ops.redis.exists(n.alive("worker", worker_id, 0)):
        raise OpsError(f"no live worker {worker_id} in namespace {settings.namespace!r}")
    patience = settings.shutdown_grace + SLACK
    for group in n.all_groups:  # its heartbeat in any group sees it
        await ops.redis.set(n.drain("worker", worker_id, group), "1", ex=max(1, round(patience)))
    owned = await ops.owned(worker_id)
    print(f"asked {worker_id} to drain: it owns {owned} conversation(s)", flush=True)
    if not wait:
        return 0
    loop = asyncio.get_running_loop()
    give_up = loop.time() + patience
    while await ops.redis.exists(n.alive("worker", worker_id, 0)):
        if loop.time() > give_up:
            raise OpsError(f"{worker_id} is still running after {patience:.0f} s")
        if (now_owned := await ops.owned(worker_id)) != owned:
            owned = now_owned
            print(f"  it owns {owned} conversation(s)", flush=True)
        await asyncio.sleep(POLL)
    if await ops.redis.zscore(n.deadlines("worker", 0), worker_id) is not None:
        raise OpsError(
            f"{worker_id} stopped without leaving (killed?): "
            "its conversations move once a reaper notices"
        )
    print(f"{worker_id} drained and left the fleet", flush=True)
    return 0


async def drain_worker(settings: Settings, worker_id: str, wait: bool) -> int:
    return await run(settings, "drain", lambda ops: drain(ops, worker_id, wait))
