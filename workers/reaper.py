"""The reaper: re-dispatches the conversations of workers whose liveness lapsed, fires
agents' timers when due, and (with history in PostgreSQL) does the moves owed too long.

Several reapers may run; a leader lease lets one act at a time and a standby take
over within ``reaper_lease_ttl``. The fleet does not depend on it for recovery:
gateways request a claim for any conversation they publish to that has no live
owner. The reaper makes recovery proactive, for conversations nobody writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import structlog
from redis.exceptions import RedisError

from broker import metrics
from broker.amqp import Broker
from broker.archive import archive_for
from broker.archiver import Archiver
from broker.backoff import Backoff
from broker.errors import ConversationClosed, Unavailable
from broker.events import ProcessInfo
from broker.exposition import STUCK_AFTER, Exposition
from broker.history import History
from broker.leader import LeaderLease
from broker.leases import Leases
from broker.lifecycle import Service, process_id
from broker.liveness import Liveness
from broker.redis import connect
from broker.settings import Settings
from broker.store import Store
from broker.timers import DueTimer, Timers
from workers import census

log = structlog.get_logger()

# Seconds between the leader's counts of the whole fleet (its metrics).
CENSUS_EVERY = 2.0
# The reason the fleet's history gives for a process the reaper found dead.
LAPSED = "liveness lapsed"
# Timers fired per sweep and key group, at most: after downtime, a backlog goes out in
# batches.
TIMER_BATCH = 500
# A timer whose firing is not confirmed is fired again after this long (seconds).
TIMER_RETRY = 5.0


class Reaper(Service):
    """Sweeps the index of worker deadlines; each dead worker's conversations are re-dispatched."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.settings = settings
        self.names = settings.names
        self.reaper_id = process_id()
        self.leading = False
        self.redis = connect(settings.redis_url, settings.redis_cluster)
        self.leases = Leases(self.redis, self.names)
        self.timers = Timers(self.redis, self.names)
        self.workers = Liveness(self.redis, self.names, "worker")
        self.gateways = Liveness(self.redis, self.names, "gateway")
        self.reapers = Liveness(self.redis, self.names, "reaper")
        self.history = History(self.redis, self.names)
        self._started_at = time.time()
        self._beat_at = 0.0  # monotonic time of our last liveness renewal
        self._counted_at = 0.0  # ... and of our last census
        self._ticked_at = time.monotonic()  # ... and of the last turn of our loop
        self.exposition = Exposition(
            metrics.REAPER, self.healthy, settings.host, settings.metrics_port
        )
        self.leader = LeaderLease(self.redis, self.names, self.reaper_id, settings.reaper_lease_ttl)
        self.archive = archive_for(settings)
        self.archiver = (
            Archiver(self.redis, self.names, self.archive, "reaper")
            if self.archive is not None
            else None
        )
        self._archiving: asyncio.Task[None] | None = None  # a sweep of owed moves
        store = Store(self.redis, self.names, self.archive)
        self.broker = Broker(
            settings.amqp_url,
            self.names,
            name="reaper",
            reopen=store.may_reopen,
            publish_timeout=settings.publish_timeout,
            queue_type=settings.queue_type,
        )

    async def serve(self) -> None:
        self.exposition.start()
        try:
            if await self.connect(self.redis, self.broker, self.archive):
                log.info("reaper_started", reaper_id=self.reaper_id)
                self.serving()
                await self._loop()
                with contextlib.suppress(Exception):
                    await self.leader.resign()
                with contextlib.suppress(Exception):
                    await self.reapers.forget(self.reaper_id, leaving=True)
        finally:
            self._lead(False)
            self.exposition.close()
            if self._archiving is not None:  # a move cut short stays owed
                self._archiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._archiving
            if self.archive is not None:
                await self.archive.close()
            await self.broker.close()
            await self.redis.aclose()
        log.info("reaper_stopped", reaper_id=self.reaper_id)

    def healthy(self) -> bool:
        """For a liveness probe: the sweep loop turns."""
        return time.monotonic() - self._ticked_at < STUCK_AFTER + self.settings.reaper_interval

    async def _loop(self) -> None:
        interval = self.settings.reaper_interval
        backoff = Backoff(first=interval)
        while not self._stop.is_set():
            delay, redis_error = interval, None
            self._ticked_at = time.monotonic()
            try:
                delay = await self.tick()
                backoff.reset()
            except (RedisError, OSError) as exc:
                delay, redis_error = backoff.next(), exc
            except Unavailable:  # the broker's: ``watch`` tells whether it is down
                delay = backoff.next()
            except Exception as exc:
                delay = backoff.next()
                log.warning("sweep_failed", reaper_id=self.reaper_id, error=repr(exc))
            if not self.watch(self.broker, redis_error):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def info(self) -> ProcessInfo:
        """This reaper, as ``fleet status`` shows it."""
        port = self.settings.metrics_port
        return ProcessInfo(
            role="reaper",
            process_id=self.reaper_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            metrics=f"{self.settings.host}:{port}" if port else None,
        )

    async def tick(self) -> float:
        """Say we are alive (for ``fleet status``), keep (or take) the leadership; sweep
        when leading. How long to wait for the next tick: the sweep interval, or less
        when a timer falls due sooner."""
        ttl = self.settings.reaper_lease_ttl
        if time.monotonic() - self._beat_at >= ttl / 4:
            await self.reapers.heartbeat(self.reaper_id, ttl, register=True, info=self.info())
            self._beat_at = time.monotonic()
        leading = await self.leader.hold()
        if leading != self.leading:
            log.info(
                "reaper_leading" if leading else "reaper_standing_by", reaper_id=self.reaper_id
            )
            self._lead(leading)
        interval = self.settings.reaper_interval
        if not leading:
            return interval
        await self.sweep()
        if time.monotonic() - self._counted_at >= CENSUS_EVERY:
            self._counted_at = time.monotonic()
            metrics.FLEET.figures = await census.count(self.redis, self.names, self.broker)
        if self.archiver is not None and (self._archiving is None or self._archiving.done()):
            # Beside the sweeps, not in them: a long history must not delay failover.
            self._archiving = asyncio.create_task(self._archive_owed(self.archiver))
        due = await self.timers.next_due()
        return interval if due is None else min(interval, max(0.0, due - time.time()))

    def _lead(self, leading: bool) -> None:
        """Only the leader exports the fleet's figures (a sum over reapers counts once)."""
        if self.leading and not leading:
            metrics.FLEET.figures = None
            self._counted_at = 0.0
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)

    async def sweep(self) -> int:
        """Re-dispatch the conversations of every dead worker; how many were re-dispatched.

        Dead gateways' connections are forgotten too, so passivation sees the truth, and
        conversations owed an owner for too long are asked for again. The dead are found
        in group 0 (every process has a copy of its liveness there) and forgotten in
        every group; each key group keeps its own list of conversations owed an owner.
        """
        for gateway_id in await self.gateways.expired():
            forgotten = await self.gateways.forget(gateway_id)
            if forgotten >= 0:
                log.warning("gateway_reaped", gateway_id=gateway_id, conversations=forgotten)
                await self.history.record("died", "gateway", gateway_id, forgotten, LAPSED)
        for reaper_id in await self.reapers.expired():
            if await self.reapers.forget(reaper_id) >= 0:
                log.warning("reaper_reaped", reaper_id=reaper_id)
        retry = self.settings.claim_retry_after
        owed = await asyncio.gather(*(self.leases.pending(g, retry) for g in self.names.all_groups))
        for cid in (cid for cids in owed for cid in cids):
            log.info("claim_requested_again", conversation_id=cid)
            await self.broker.request_claim(cid, "retry")
        await self.fire_timers()
        moved = 0
        for worker_id in await self.workers.expired():
            cids = await self.leases.owned_by(worker_id)
            # Its last heartbeat renewed its liveness until its deadline: it was alive then.
            deadline = await self.workers.deadline(worker_id)
            last_seen = None if deadline is None else deadline - self.settings.liveness_ttl
            await asyncio.gather(
                *(self.broker.request_claim(cid, "failover", last_seen) for cid in cids)
            )
            if await self.workers.forget(worker_id) >= 0:
                log.warning("worker_reaped", worker_id=worker_id, conversations=len(cids))
                metrics.WORKERS_REAPED.inc()
                await self.history.record("died", "worker", worker_id, len(cids), LAPSED)
                moved += len(cids)
        return moved

    async def _archive_owed(self, archiver: Archiver) -> None:
        """Move the histories owed a move for longer than ``archive_retry_after``."""
        try:
            moved = await archiver.sweep(self.settings.archive_retry_after)
        except Exception as exc:  # tried again at the next tick
            log.warning("archive_sweep_failed", reaper_id=self.reaper_id, error=repr(exc))
        else:
            if moved:
                log.info("owed_history_archived", reaper_id=self.reaper_id, conversations=moved)

    async def fire_timers(self) -> int:
        """Queue each due timer as input of its conversation (asking for an owner if it
        has none live); how many went out."""
        batches = await asyncio.gather(
            *(self.timers.due(g, TIMER_BATCH, TIMER_RETRY) for g in self.names.all_groups)
        )
        due = [timer for batch in batches for timer in batch]
        outcomes = await asyncio.gather(
            *(self._fire(timer) for timer in due), return_exceptions=True
        )
        sent = [timer for timer, outcome in zip(due, outcomes, strict=True) if outcome is None]
        await self.timers.fired(sent)
        metrics.TIMERS_FIRED.inc(len(sent))
        if len(sent) < len(due):
            log.warning("timers_not_fired", reaper_id=self.reaper_id, timers=len(due) - len(sent))
        return len(sent)

    async def _fire(self, timer: DueTimer) -> None:
        cid = timer.conversation_id
        try:
            await self.broker.publish_input(cid, timer.fired)
        except ConversationClosed:
            return  # its queue is gone with the conversation: nothing to wake
        if timer.needs_owner:
            await self.broker.request_claim(cid)
