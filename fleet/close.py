"""``fleet close CONVERSATION``: close a conversation for good, as its user's DELETE
does: no more input is admitted, its owner answers what is queued, logs ``closed``
(with the reason) and deletes its queue."""

from __future__ import annotations

import asyncio

from broker.names import valid_conversation_id
from broker.redis import text
from broker.settings import Settings
from broker.store import Store
from fleet.ops import Ops, OpsError, run

WAIT = 60.0
POLL = 0.1


async def close(ops: Ops, cid: str, reason: str, wait: bool) -> int:
    n = ops.names
    user = await ops.redis.hget(n.meta(cid), "user") if valid_conversation_id(cid) else None
    if user is None:
        raise OpsError(f"no conversation {cid} in namespace {ops.settings.namespace!r}")
    before = await Store(ops.redis, n).close(cid, text(user), reason)
    if before not in ("running", "idle"):
        print(f"{cid} is {before} already")
        return 0
    await (await ops.broker()).close_conversation(cid, reason)
    print(f"closing {cid} (it was {before})", flush=True)
    if wait:
        try:
            async with asyncio.timeout(WAIT):
                await _closed(ops, cid)
        except TimeoutError:
            raise OpsError(
                f"{cid} is still closing after {WAIT:.0f} s: see fleet conversations --stuck"
            ) from None
        print(f"{cid} is closed")
    return 0


async def _closed(ops: Ops, cid: str) -> None:
    """Return once the conversation's owner marked it closed (polled: it is remote)."""
    while True:
        if await ops.redis.hget(ops.names.meta(cid), "status") == b"closed":
            return
        await asyncio.sleep(POLL)


async def close_conversation(settings: Settings, cid: str, reason: str, wait: bool) -> int:
    return await run(settings, "close", lambda ops: close(ops, cid, reason, wait))
