"""The whole fleet as real processes: SIGKILL a worker under traffic; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import signal
import time

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import Client, create_conversation, owned, replies, token
from tests.traffic import Sender, settle, tally

CONVERSATIONS = 20


async def test_sigkill_a_worker_under_traffic(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        victim, victim_id = await fleet.worker()
        _, survivor_id = await fleet.worker()
        bearer = token(settings, "alice")
        senders = []
        for _ in range(CONVERSATIONS):
            cid = await create_conversation(url, bearer)
            senders.append(Sender(cid, await Client().connect(url, bearer, cid)))

        stop = asyncio.Event()
        traffic = [asyncio.create_task(s.run(stop, interval=0.05)) for s in senders]
        for sender in senders:
            await sender.client.wait_for(lambda ev: len(replies(ev)) >= 3)
        victim_owned = await owned(redis, names, victim_id)
        assert victim_owned, "the victim owned no conversation; nothing to fail over"

        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        moved = [s for s in senders if s.cid in victim_owned]
        for sender in moved:
            await sender.client.wait_for(sender.replied_after(killed_at))
        resumed = [s.first_reply_after(killed_at) for s in moved]
        resume = max(t for t in resumed if t is not None) - killed_at
        stop.set()
        await asyncio.gather(*traffic)
        await settle(senders)

        result = await tally(senders, redis, names)
        print(
            f"\nfailover: {len(moved)} conversations resumed {resume:.3f}s after SIGKILL; "
            f"sent {result.sent}, acked {result.acked}, answered {result.answered}"
        )
        assert result.lost == [] and result.duplicated == []
        assert result.answered == result.acked > 0
        owners = {(await redis.hget(names.meta(s.cid), "owner")) for s in moved}
        assert owners == {survivor_id.encode()}
        for sender in senders:
            await sender.client.close()
