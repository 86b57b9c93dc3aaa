"""The agent-loop worker process: claims conversations and runs their loops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

import structlog

from broker import metrics
from broker.amqp import Broker, Consumer
from broker.archive import archive_for
from broker.archiver import Archiver
from broker.backoff import Backoff
from broker.errors import LeaseLost
from broker.events import Malformed, ProcessInfo, decode_claim_request
from broker.exposition import STUCK_AFTER, Exposition
from broker.history import History
from broker.inbox import Delivery
from broker.leases import Leases
from broker.lifecycle import Service, cancel_all, first_of, process_id
from broker.liveness import Beat, Liveness
from broker.redis import connect
from broker.settings import Settings
from broker.store import Store
from broker.timers import Timers
from broker.webhook_cursors import WebhookCursors
from workers.agents import AgentFactory, load_factory
from workers.conversation import ConversationLoop
from workers.fencing import FenceReason, Fencing
from workers.heap import Heap
from workers.watchdog import Watchdog
from workers.webhook_delivery import WebhookDeliverer
from workers.webhook_relay import WebhookRelay

log = structlog.get_logger()

CONVERSATION_PREFETCH = 4
DISPATCH_PREFETCH = 32
# The broker serves each channel's methods one after another: spreading loops over a
# few channels lets a burst of claims (failover, drain) declare and consume in parallel.
CONSUME_CHANNELS = 8
# A drain has at most this many conversations in transit (released, their queue not
# yet consumed by another worker): the others are served meanwhile, so each pauses only
# for its batch's move. Released all at once, each waited for the heir to open them all.
DRAIN_WINDOW = 20
DRAIN_POLL = 0.02  # seconds between looks at which of those are consumed again
# None consumed again for this long: no worker is taking them (none is up, or all are
# full); the rest are released at once, owed an owner.
HEIR_PATIENCE = 1.0


class Worker(Service):
    """Takes claim requests while below capacity and runs one loop per claimed conversation.

    Liveness is one short-TTL key renewed by ``_heartbeat``; conversation leases have
    no TTL of their own. A worker that cannot prove it is alive fences itself: it
    stops every loop and comes back as a new incarnation with a new id.
    """

    def __init__(self, settings: Settings, agent_factory: AgentFactory | None = None) -> None:
        super().__init__(settings)
        self.settings = settings
        self.names = settings.names
        self.agent_factory = agent_factory or load_factory(settings.agent)
        self.agent_factory(settings)  # a misconfigured agent fails now, not at its first turn
        self.fencing = Fencing(process_id(), settings.liveness_ttl)
        self.redis = connect(settings.redis_url, settings.redis_cluster)
        # History in PostgreSQL: this worker moves what it passivates or closes.
        self.archive = archive_for(settings)
        self.archiver = (
            Archiver(self.redis, self.names, self.archive, "worker")
            if self.archive is not None
            else None
        )
        self.store = Store(self.redis, self.names, self.archive, settings.redis_wait_replicas)
        self.timers = Timers(self.redis, self.names)
        self.leases = Leases(self.redis, self.names, archiving=self.archive is not None)
        self.liveness = Liveness(self.redis, self.names, "worker")
        self.history = History(self.redis, self.names)
        # The broker gives up on a worker that stopped answering about as soon as the
        # fleet does (its liveness TTL), and hands what it held to the next owner.
        self.broker = Broker(
            settings.amqp_url,
            self.names,
            name="worker",
            channels=CONSUME_CHANNELS,
            prefetch=CONVERSATION_PREFETCH,
            heartbeat=max(1, round(settings.liveness_ttl)),
            reopen=self.store.may_reopen,
            publish_timeout=settings.publish_timeout,
            queue_type=settings.queue_type,
        )
        self.watchdog = Watchdog(budget=settings.liveness_ttl / 2)
        self.heap = Heap(budget=self.watchdog.budget)
        # With webhooks on, every worker delivers the webhook outbox (see
        # workers.webhook_delivery) and relays its conversations' state changes to it.
        self.webhook_cursors = WebhookCursors(self.redis, self.names)
        self.deliverer = (
            WebhookDeliverer(settings, self.broker, self.webhook_cursors)
            if settings.webhook_signing_key
            else None
        )
        self.exposition = Exposition(
            metrics.WORKER, self.healthy, settings.host, settings.metrics_port
        )
        self.loops: dict[str, tuple[ConversationLoop, asyncio.Task[None]]] = {}
        self._tasks = asyncio.TaskGroup()
        self._claiming = 0
        self._registered = asyncio.Event()
        self._stopping = False
        self._dispatch: Consumer | None = None
        self._dispatch_lock = asyncio.Lock()
        self._dispatch_failing = False  # the last update of the consumer failed
        self._started_at = time.time()

    @property
    def worker_id(self) -> str:
        return self.fencing.worker_id

    def info(self) -> ProcessInfo:
        """This incarnation, as ``fleet status`` shows it."""
        port = self.settings.metrics_port
        return ProcessInfo(
            role="worker",
            process_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            incarnation=self.fencing.incarnation,
            capacity=self.settings.worker_capacity,
            metrics=f"{self.settings.host}:{port}" if port else None,
        )

    # --- lifecycle --------------------------------------------------------------------
    async def serve(self) -> None:
        """Run until stopped (SIGTERM, SIGINT), then drain."""
        self.exposition.start()
        self.heap.watch()
        metrics.CAPACITY.set(self.settings.worker_capacity)
        try:
            if await self.connect(self.redis, self.broker, self.archive):
                await self._run()
        finally:
            self.heap.close()
            self.exposition.close()
            if self.archiver is not None:  # moves cut short stay owed, for the reaper
                await self.archiver.close()
            if self.archive is not None:
                await self.archive.close()
            await self.broker.close()
            await self.redis.aclose()
        log.info("worker_stopped", worker_id=self.worker_id)

    async def _run(self) -> None:
        self.broker.on_reconnect(self._on_reconnect)
        async with self._tasks:
            passivating = self._tasks.create_task(self._passivate_idle())
            background = [
                self._tasks.create_task(self._heartbeat()),
                self._tasks.create_task(self.watchdog.pulse()),
            ]
            if self.deliverer is not None:
                background.append(self._tasks.create_task(self.deliverer.run()))
            await first_of(self._registered, self._stop)
            if not self._stop.is_set():
                await self._update_dispatch()
                log.info(
                    "worker_started",
                    worker_id=self.worker_id,
                    capacity=self.settings.worker_capacity,
                )
                self.serving()
                await self._stop.wait()
            # A passivation under way finishes first: cut short, its broker operation
            # could leave the channel waiting for a reply, and the broker's close with it.
            await asyncio.wait([passivating], timeout=self.settings.shutdown_grace)
            handed_over = await self._drain() if self.fatal is None else 0
            await cancel_all([*background, passivating])
            if self.fatal is None:
                # Only now: a heartbeat still running would see the key gone and fence.
                await self.liveness.forget(self.worker_id, leaving=True)
                await self.history.record("left", "worker", self.worker_id, handed_over)
            else:
                self._stopping = True
                await self._stop_loops()

    def _on_reconnect(self) -> None:
        """The robust connection restored its channels; loops consume again on them."""
        log.info("broker_reconnected", worker_id=self.worker_id, conversations=len(self.loops))
        for loop, _task in self.loops.values():
            loop.reconsume()
        if self.deliverer is not None:
            self.deliverer.reconnected()

    # --- liveness -----------------------------------------------------------------------
    def healthy(self) -> bool:
        """For a liveness probe: the event loop turns (a fenced worker rejoins by itself;
        one stuck this long will not)."""
        return self.watchdog.silent_for() < STUCK_AFTER

    def alive(self) -> bool:
        """Whether this incarnation is surely still alive in the fleet's eyes."""
        return self.fencing.alive(time.monotonic()) and not self.watchdog.stalled.is_set()

    async def _heartbeat(self) -> None:
        """Renew liveness every interval; fence as soon as it cannot be proven (see
        ``workers.fencing``)."""
        ttl = self.settings.liveness_ttl
        interval = self.settings.heartbeat_interval
        while True:
            if self.watchdog.stalled.is_set():
                await self._fence("loop_stalled")
                self.watchdog.stalled.clear()
            self.heap.tick(len(self.loops))
            sent = time.monotonic()
            renewed: bool | None = None
            registering = not self.fencing.registered
            try:
                async with asyncio.timeout(interval):
                    beat = await self.liveness.heartbeat(
                        self.worker_id,
                        ttl,
                        register=registering,
                        info=self.info() if registering else None,
                    )
                renewed = bool(beat)
                metrics.HEARTBEAT_SECONDS.observe(time.monotonic() - sent)
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
            if not self.watch(self.broker, failure):
                return
            if renewed and beat is Beat.DRAIN and not self._stop.is_set():
                log.info("drain_requested", worker_id=self.worker_id)
                self.stop()  # as SIGTERM does: drain, release, exit 0
            if renewed:
                if self.fencing.renewed(sent):
                    self._registered.set()
                    rejoined = self.fencing.incarnation > 0
                    if rejoined:
                        log.info("worker_rejoined", worker_id=self.worker_id)
                    why = "rejoined after a fence" if rejoined else None
                    self._tasks.create_task(
                        self.history.record("joined", "worker", self.worker_id, reason=why)
                    )
                await self._keep_up()
            elif reason := self.fencing.verdict(renewed, time.monotonic()):
                await self._fence(reason)
            await asyncio.sleep(max(0.0, sent + interval - time.monotonic()))

    async def _keep_up(self) -> None:
        """After each confirmed heartbeat: consume claim requests if there is room and a
        failure left the worker deaf to them (a channel closed under the consumer as it
        started, as in a fence under load)."""
        await self._update_dispatch()

    async def _fence(self, reason: FenceReason) -> None:
        """Stop every loop at once; come back as a new incarnation that owns nothing.

        Our old liveness key is deleted (if Redis answers) so the reaper re-dispatches
        the old incarnation's conversations at once instead of after its TTL.
        """
        if not self.fencing.registered or self._stopping:
            return
        log.warning(
            "worker_fenced", worker_id=self.worker_id, reason=reason, conversations=len(self.loops)
        )
        metrics.FENCES.labels(reason).inc()
        fenced_id = self.fencing.fence()
        self._tasks.create_task(
            self.history.record("fenced", "worker", fenced_id, len(self.loops), reason)
        )
        await self._update_dispatch()
        await self._stop_loops()
        try:
            async with asyncio.timeout(self.settings.heartbeat_interval):
                await self.liveness.expire(fenced_id)
        except Exception as exc:
            log.warning("expire_failed", worker_id=fenced_id, error=repr(exc))

    async def _stop_loops(self) -> None:
        """Cancel every loop at once; what they held goes back to its queue."""
        await cancel_all(task for _, task in self.loops.values())

    # --- claiming ---------------------------------------------------------------------------
    def _has_room(self) -> bool:
        return (
            not self._stopping
            and self.alive()
            and len(self.loops) + self._claiming < self.settings.worker_capacity
        )

    async def _update_dispatch(self) -> None:
        """Consume claim requests only while there is room for another conversation."""
        async with self._dispatch_lock:
            try:
                if self._has_room() and self._dispatch is None:
                    self._dispatch = await self.broker.consume_claim_requests(
                        self._on_claim_request, DISPATCH_PREFETCH
                    )
                elif not self._has_room() and self._dispatch is not None:
                    consumer, self._dispatch = self._dispatch, None
                    await consumer.cancel()  # if this fails, the channel took it along
            except Exception as exc:  # tried again at the next heartbeat
                if not self._dispatch_failing:  # once per outage, not once per beat
                    log.warning("dispatch_update_failed", error=repr(exc))
                self._dispatch_failing = True
            else:
                self._dispatch_failing = False

    async def _on_claim_request(self, delivery: Delivery) -> None:
        try:
            request = decode_claim_request(delivery.body)
        except Malformed as exc:
            log.warning("claim_request_malformed", error=str(exc))
            await delivery.reject()
            return
        cid = request.conversation_id
        if cid in self.loops:
            await delivery.ack()
            return
        if not self._has_room():
            await delivery.requeue()
            await self._update_dispatch()
            return
        self._claiming += 1
        try:
            async with delivery.processing():
                claim = await self.leases.claim(
                    cid, self.worker_id, self.settings.max_conversations_per_user
                )
                if claim.outcome in ("claimed", "owned") and cid not in self.loops:
                    metrics.CLAIMS.inc()
                    metrics.FAILOVERS.inc(claim.took_over)
                    if request.since:
                        waited = max(0.0, time.time() - request.since)
                        metrics.CLAIM_LATENCY.labels(request.cause).observe(waited)
                    handed_over = request.cause == "handover"
                    self._start(cid, claim.epoch, claim.closing, claim.took_over, handed_over)
                elif claim.outcome == "not_alive":
                    raise LeaseLost(f"{self.worker_id} is not alive; cannot claim {cid}")
                else:
                    log.debug("claim_skipped", conversation_id=cid, outcome=claim.outcome)
        except Exception as exc:
            log.warning("claim_failed", conversation_id=cid, error=repr(exc))
        finally:
            self._claiming -= 1
        await self._update_dispatch()

    def _start(
        self,
        cid: str,
        epoch: int,
        closing: str | None = None,
        took_over: bool = False,
        handed_over: bool = False,
    ) -> None:
        if cid in self.loops:
            return
        loop = ConversationLoop(
            cid,
            self.worker_id,
            epoch,
            self.agent_factory(self.settings),
            self.store,
            self.timers,
            self.leases,
            self.broker,
            self.alive,
            closing,
            relay=self._relay(cid),
            took_over=took_over,
            handed_over=handed_over,
        )
        loop.log.info("lease_claimed")
        self.loops[cid] = (loop, self._tasks.create_task(self._run_loop(loop)))
        self._owned_changed()

    def _relay(self, cid: str) -> WebhookRelay | None:
        """The conversation's webhook relay, when webhooks are on (a secret to sign with)."""
        if self.deliverer is None:
            return None
        return WebhookRelay(cid, self.settings, self.webhook_cursors, self.store, self.broker)

    async def _run_loop(self, loop: ConversationLoop) -> None:
        cid = loop.conversation_id
        give_back = False
        try:
            await loop.run()
            if loop.finished and self.archiver is not None:
                self.archiver.soon(cid)  # closed for good: its history moves
        except LeaseLost as exc:
            loop.log.warning("lease_lost", reason=str(exc))
            if not self.alive():
                # Our own liveness is in doubt, not just this lease: fence everything.
                self._tasks.create_task(self._fence("liveness_unconfirmed"))
            else:
                # Our liveness was in doubt for a moment only (a late heartbeat): the
                # lease may still be ours, with no loop left to run it. Give it back.
                give_back = True
        except Exception:
            loop.log.exception("loop_failed")
            give_back = True
        finally:
            self.heap.loop_ended()
            if self.loops.get(cid, (None,))[0] is loop:
                del self.loops[cid]
                self._owned_changed()
        if give_back:
            await self._give_back(loop)
        await self._update_dispatch()

    async def _give_back(self, loop: ConversationLoop) -> None:
        """Hand over the lease of a loop that ended: another worker (or this one: the
        loop is gone, so it may) claims it again. Tried until it works, or the lease is
        no longer ours: until then nobody runs the conversation (without a reaper, for
        good). Neither a moment's doubt about our liveness (a late heartbeat) nor a
        fence since stops it: the release compares the lease it held."""
        backoff = Backoff(first=0.1, cap=2.0)
        while not self._stopping:
            try:
                await self._hand_over(loop)
                return
            except Exception as exc:
                loop.log.warning("hand_over_failed", error=repr(exc))
                await backoff.sleep()

    def _owned_changed(self) -> None:
        metrics.CONVERSATIONS_OWNED.set(len(self.loops))
        metrics.UTILIZATION.set(len(self.loops) / self.settings.worker_capacity)

    async def _hand_over(self, loop: ConversationLoop) -> bool:
        """Release the lease (compare-and-delete) and ask another worker to claim;
        whether it was still ours to release."""
        cid = loop.conversation_id
        if not await self.leases.release(cid, loop.worker_id, loop.epoch):
            return False
        await self.broker.request_claim(cid, "handover")
        loop.log.info("lease_released", stopped_at=loop.stopped_at)
        return True

    # --- passivation -------------------------------------------------------------------
    async def _passivate_idle(self) -> None:
        """Passivate conversations idle for ``passivate_after`` with no client connected."""
        # No sooner than a publish may take: input admitted before is queued by then.
        delay = max(self.settings.passivate_after, self.settings.publish_timeout)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(delay / 4, 5.0))
            now = time.monotonic()
            for loop, task in list(self.loops.values()):
                idle = loop.idle_since is not None and now - loop.idle_since >= delay
                if idle and not self._stop.is_set():
                    try:
                        await self._passivate(loop, task)
                    except Exception as exc:
                        loop.log.warning("passivate_failed", error=repr(exc))

    async def _passivate(self, loop: ConversationLoop, task: asyncio.Task[None]) -> None:
        """Stop the loop, then release lease and slot unless someone still needs it."""
        cid = loop.conversation_id
        await loop.drain()
        # Not ``await task``: a fence meanwhile cancels it, and its cancellation must not
        # end the passivation of every other conversation with it.
        await asyncio.wait([task])
        if loop.finished:
            return
        settings = self.settings
        idle = max(settings.passivate_after, settings.publish_timeout)
        try:
            outcome = await self.leases.passivate(
                cid, loop.worker_id, loop.epoch, idle, deleting=settings.publish_timeout
            )
        except Exception:
            # Its loop has stopped and its lease may still be ours: without a hand-over
            # nobody would run it (a live worker's conversations are not the reaper's).
            self._tasks.create_task(self._give_back(loop))
            raise
        if outcome == "passivated":
            loop.log.info("conversation_passivated")
            await self._delete_queue(loop)
            if self.archiver is not None:
                self.archiver.soon(cid)  # its history moves; Redis keeps its record
        elif outcome != "moved" and self.alive():
            self._start(cid, loop.epoch)  # a client or fresh input still needs it

    async def _delete_queue(self, loop: ConversationLoop) -> None:
        """A passivated conversation's queue goes too (the next input declares it again),
        unless input came meanwhile, or was requeued by the drain: that is owed an owner,
        and so is whatever a failed delete left in it."""
        cid = loop.conversation_id
        try:
            try:
                empty = await self.broker.delete_if_empty(cid)
            except Exception as exc:
                loop.log.warning("queue_not_deleted", error=repr(exc))
                empty = False
            if not empty:
                await self.broker.request_claim(cid)
        finally:
            await self.leases.queue_deleted(cid)

    # --- drain ---------------------------------------------------------------------------
    async def _drain(self) -> int:
        """Stop claiming, then hand every conversation over after the input in hand,
        ``DRAIN_WINDOW`` in transit at a time for half of ``shutdown_grace`` at most,
        then the rest at once: all within ``shutdown_grace``. How many there were."""
        self._stopping = True
        await self._update_dispatch()
        waiting = list(self.loops.values())
        total = len(waiting)
        log.info("worker_draining", worker_id=self.worker_id, conversations=total)
        started = time.monotonic()
        hurry = started + self.settings.shutdown_grace / 2
        deadline = started + self.settings.shutdown_grace
        in_transit: dict[str, int] = {}  # conversation: the epoch we released
        progress = started  # of the last release, or one consumed again
        while waiting:
            now = time.monotonic()
            if now - progress > HEIR_PATIENCE or now > hurry:
                log.info("drain_hurried", worker_id=self.worker_id, left=len(waiting))
                room = len(waiting)
            else:
                room = DRAIN_WINDOW - len(in_transit)
            moving, waiting = waiting[:room], waiting[room:]
            if moving:
                in_transit |= await self._move(moving, deadline)
                progress = time.monotonic()
            if waiting:
                await asyncio.sleep(DRAIN_POLL)
                with contextlib.suppress(Exception):  # unseen, it counts as in transit
                    if moved := await self.leases.consumed_since(in_transit):
                        for cid in moved:
                            del in_transit[cid]
                        progress = time.monotonic()
        return total

    async def _move(
        self, moving: list[tuple[ConversationLoop, asyncio.Task[None]]], deadline: float
    ) -> dict[str, int]:
        """Stop these loops after the input in hand (cut short at ``deadline``), then
        release their leases and ask another worker to claim each; those released, with
        the epoch they were released at."""
        await asyncio.gather(*(loop.drain() for loop, _ in moving), return_exceptions=True)
        tasks = [task for _, task in moving]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            await cancel_all(late)
        # Shielded: releasing and re-dispatching must finish even if we are cancelled.
        outcomes = await asyncio.shield(
            asyncio.gather(*(self._hand_over(loop) for loop, _ in moving), return_exceptions=True)
        )
        released: dict[str, int] = {}
        for (loop, _), outcome in zip(moving, outcomes, strict=True):
            if isinstance(outcome, BaseException):  # once we have left, the reaper moves it
                loop.log.warning("hand_over_failed", error=repr(outcome))
            elif outcome:
                released[loop.conversation_id] = loop.epoch
        return released
