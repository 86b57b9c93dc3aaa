"""One conversation's writer, under one lease: the fenced log, and what goes out live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from broker import metrics
from broker.amqp import NOT_TAKEN, Broker
from broker.backoff import Backoff
from broker.errors import LeaseLost
from broker.events import Event, NewEvent, StreamFrame, with_id
from broker.store import NO_REQUEST_CHANGE, RequestChange, Store
from broker.timers import Timers

# Messages whose reply is being timed, per conversation: the oldest are forgotten first.
AWAITED = 1000
# A turn's start (state ``running``) goes out with what the turn says first, or after
# this many seconds: most turns say something sooner, and then one message carries both.
LINGER = 0.005

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Logged:
    """Events as the log holds them; ``fresh`` when this call logged them (not a
    duplicate of an earlier call with the same ``once``)."""

    events: list[Event]
    fresh: bool

    @property
    def first_id(self) -> int:
        return self.events[0].id if self.events else -1


class Scribe:
    """Logs events under one lease and publishes them, and keeps the conversation's
    timers; refuses once liveness is in doubt."""

    def __init__(
        self,
        cid: str,
        lease: str,
        store: Store,
        timers: Timers,
        broker: Broker,
        alive: Callable[[], bool],
        on_state: Callable[[], None] | None = None,
    ) -> None:
        self.conversation_id = cid
        self.lease = lease
        self._store = store
        self._timers = timers
        self._broker = broker
        self._alive = alive
        # Told of every append that may have logged a state change (the webhook relay).
        self._on_state = on_state
        self._awaited: OrderedDict[str, float] = OrderedDict()  # action id -> sent_at
        self._held: list[bytes] = []  # logged, to be published with what comes next
        self._linger: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None  # what lingered too long

    def expect_reply(self, action_id: str, sent_at: float) -> None:
        """Time the reply to this message, from when its gateway published it."""
        self._awaited[action_id] = sent_at
        self._awaited.move_to_end(action_id)
        while len(self._awaited) > AWAITED:
            self._awaited.popitem(last=False)

    def _observe(self, events: Sequence[NewEvent]) -> None:
        """Metrics of what was just logged (once): replies timed, stops and aborted turns
        counted; a turn that ended without a reply is timed no more."""
        now = time.time()
        for event in events:
            data = event.data
            if event.source == "user" and event.kind == "stop":
                metrics.STOPS.inc()
            elif event.source == "agent" and event.kind == "message":
                for action_id in [data.get("in_reply_to"), *data.get("steered", ())]:
                    sent_at = self._awaited.pop(str(action_id), None)
                    if sent_at is not None:
                        metrics.ACTION_LATENCY.observe(max(0.0, now - sent_at))
            elif event.kind in ("turn_aborted", "error"):
                if event.kind == "turn_aborted":
                    metrics.TURNS_ABORTED.labels(str(data.get("reason"))).inc()
                self._awaited.pop(str(data.get("turn_id", data.get("action_id"))), None)

    def _check(self) -> None:
        if not self._alive():
            raise LeaseLost(f"liveness of {self.lease} lapsed")

    async def log(
        self,
        *events: NewEvent,
        once: str = "",
        turn_from: str = "",
        logged_step: str = "",
        requests: RequestChange = NO_REQUEST_CHANGE,
    ) -> Logged:
        """Log ``events`` together (fenced; with ``once`` at most once ever), then
        publish them. ``turn_from``, ``logged_step`` and ``requests``: see
        ``lua/append.lua``."""
        self._check()
        cid = self.conversation_id
        bodies = [event.body(cid) for event in events]
        try:
            appended = await self._store.append(
                cid, self.lease, bodies, once, turn_from, logged_step, last_state(events), requests
            )
        finally:  # even on an error: the append may have happened; the relay reads the log
            if self._on_state is not None and any(e.kind == "state" for e in events):
                self._on_state()
        if appended.duplicate:
            # Logged by an earlier delivery that may have died before publishing:
            # publish again; gateways drop ids they already delivered.
            entries = appended.entries
            logged = [Event.from_json(entry) for entry in entries]
        else:
            first = appended.first_id
            entries = [with_id(first + i, body) for i, body in enumerate(bodies)]
            logged = [event.logged(first + i, cid) for i, event in enumerate(events)]
            self._observe(events)
        if entries and last_state(events) == "running":
            self._hold(entries)
        elif entries:
            await self.publish(entries)
        return Logged(logged, not appended.duplicate)

    def _hold(self, entries: list[bytes]) -> None:
        self._held += entries
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        self._sending = asyncio.create_task(self._send_held())

    async def _send_held(self) -> None:
        with contextlib.suppress(LeaseLost):  # the next owner publishes our last events
            await self.publish([])

    def _take(self, entries: list[bytes]) -> list[bytes]:
        """What is held, then ``entries``: held no more, and no longer lingering."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        taken, self._held = self._held + entries, []
        return taken

    async def flush(self) -> None:
        """Publish what is held, trying once: the conversation stops here, and must not
        wait for a broker that is away (gateways fill the gap from the log when the
        next events reach them)."""
        if self._sending is not None:
            self._sending.cancel()
        held = self._take([])
        if held:
            try:
                await self._broker.publish_events(self.conversation_id, held)
            except NOT_TAKEN as exc:
                log.warning(
                    "publish_dropped", conversation_id=self.conversation_id, error=repr(exc)
                )

    async def publish(self, entries: list[bytes]) -> None:
        """Send what was just logged to the gateways (after what is held), retrying while
        the broker is away: it is logged, so failing the caller now would leave its work
        half done (its input comes again, finds itself logged, and is skipped). Gives up
        only with the lease."""
        entries = self._take(entries)
        if not entries:
            return
        retry, warned = Backoff(first=0.05), False
        while True:
            try:
                await self._broker.publish_events(self.conversation_id, entries)
                return
            except NOT_TAKEN as exc:
                self._check()
                if not warned:
                    log.warning(
                        "publish_retrying", conversation_id=self.conversation_id, error=repr(exc)
                    )
                    warned = True
                await retry.sleep()

    async def stream(self, frame: StreamFrame) -> None:
        """Publish a stream frame, and keep the step's snapshot for late joiners."""
        self._check()
        if not await self._store.stream(self.conversation_id, self.lease, frame):
            raise LeaseLost(f"lease {self.lease} is no longer current")
        await self.publish([])  # the turn's start first
        await self._broker.publish_frame(frame)
        metrics.FRAMES.inc()

    async def schedule(self, timer_id: str, at: float, payload: object) -> None:
        self._check()
        await self._timers.schedule(self.conversation_id, self.lease, timer_id, at, payload)

    async def cancel(self, timer_id: str) -> bool:
        self._check()
        return await self._timers.cancel(self.conversation_id, self.lease, timer_id)

    async def timer_logged(self, timer_id: str) -> None:
        await self._timers.forget(self.conversation_id, timer_id)

    async def history(self, after: int = -1) -> list[Event]:
        raw = await self._store.read(self.conversation_id, after)
        return [Event.from_json(event) for event in raw]


def last_state(events: tuple[NewEvent, ...]) -> str:
    """The last agent state among ``events`` ('' when none): kept in the record."""
    for event in reversed(events):
        if event.source == "agent" and event.kind == "state":
            return str(event.data.get("state", ""))
    return ""
