"""One conversation's turns: which runs, which wait, and what input does while one runs.

Input is logged as it arrives (and then acknowledged), so nothing waits in the queue
behind a running turn: a stop reaches the turn at once, and the log alone says which
turns are unfinished. The record's ``turn_from`` (kept by the append script) marks
the oldest unfinished turn, so a new owner reads only the log from there to resume:
the running turn with its logged steps, then the waiting ones in order.

Every change of state (a message admitted, a turn started, finished, stopped) happens
under one lock, so a message is never steered into a turn that is already ending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.exceptions import RedisError

from broker import metrics, tracing
from broker.errors import LeaseLost, Unavailable
from broker.events import Action, Event, NewEvent, TimerFired, state, turn_id_of
from broker.settings import BusyPolicy
from broker.store import RequestChange
from workers.agents import Agent, TurnFailed
from workers.scribe import Logged, Scribe
from workers.stream import Streamer
from workers.turn import LiveTurn

AbortReason = str  # "stopped" | "interrupted" | "closed"


def idle() -> NewEvent:
    """State ``awaiting_user_input``, as of now."""
    return state("awaiting_user_input")


@dataclass(slots=True)
class Running:
    turn: LiveTurn
    task: asyncio.Task[None]


class TurnRunner:
    """Runs a conversation's turns one at a time, under the conversation's busy policy."""

    def __init__(
        self,
        agent: Agent,
        scribe: Scribe,
        streamer: Streamer,
        epoch: int,
        on_failure: Callable[[BaseException], None],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.agent = agent
        self.scribe = scribe
        self.streamer = streamer
        self.epoch = epoch
        self.policy: BusyPolicy = "enqueue"
        self._on_failure = on_failure  # a turn found the lease lost: the loop must stop
        self._log = log
        self._lock = asyncio.Lock()
        self._running: Running | None = None
        self._pending: deque[Event] = deque()  # messages and timers waiting for a turn
        # Events from this id on were logged by this runner; the turns it took (started,
        # queued or resumed). An input that finds itself logged by this runner but not
        # taken had its first handling cut short after the append (a lost reply): take it.
        self.first_new_id = 0
        self._taken: set[str] = set()
        self.last_end = time.monotonic()

    @property
    def busy(self) -> bool:
        """A turn runs, or waits for one; a turn waiting for an approval is not busy
        (its conversation may passivate meanwhile: the answer wakes it up)."""
        running = self._running
        return bool(self._pending) or (running is not None and running.turn.awaiting is None)

    # --- input, in queue order ------------------------------------------------------
    async def message(self, action: Action) -> None:
        """Log a user message and give it a turn, now or later, or steer it in."""
        async with self._lock:
            once = f"action:{action.action_id}"
            running = self._running
            if running is not None and self.policy == "steer":
                logged = await self.scribe.log(
                    action.event(steered_into=running.turn.turn_id), once=once
                )
                if self._new(logged, action.action_id):
                    self._taken.add(action.action_id)
                    running.turn.steer_in(logged.events[0])
                return
            fresh = await self._take(action.event(), action.action_id, once)
            if fresh and running is not None and self.policy == "interrupt":
                await self._abort(running, "interrupted")

    async def timer(self, fired: TimerFired) -> None:
        """Log a timer that fired, once, and give it a turn after those waiting."""
        async with self._lock:
            event = fired.event()
            if await self._take(event, fired.timer_id, f"timer:{fired.timer_id}"):
                metrics.TIMER_LATENESS_SECONDS.observe(max(0.0, event.ts - fired.at))
        await self.scribe.timer_logged(fired.timer_id)

    async def _take(self, event: NewEvent, turn_id: str, once: str) -> bool:
        """Lock held: log what starts a turn; start it if none runs or waits, else
        queue it. False if it was taken before."""
        idle = self._running is None and not self._pending
        extra = (state("running", turn_id=turn_id),) if idle else ()
        logged = await self.scribe.log(event, *extra, once=once, turn_from="=" if idle else "")
        if not self._new(logged, turn_id):
            return False
        self._taken.add(turn_id)
        if idle:
            self._start(logged.events[0], [], [])
        else:
            self._pending.append(logged.events[0])
        return True

    def _new(self, logged: Logged, key: str) -> bool:
        """Whether what was just logged (under ``key``) is this runner's to act on: logged
        now, or by an earlier attempt of this runner that did not get to act on it."""
        return logged.fresh or (logged.first_id >= self.first_new_id and key not in self._taken)

    async def approve(self, action: Action) -> None:
        """Log the user's answer to an approval request; the turn that asked goes on."""
        async with self._lock:
            turn = self._running.turn if self._running is not None else None
            request = action.request_id
            asked = turn is not None and request in turn.requests and request not in turn.answers
            events = [action.event()]
            if asked and turn is not None:
                events.append(state("running", turn_id=turn.turn_id))
            logged = await self.scribe.log(*events, once=f"action:{action.action_id}")
            if asked and turn is not None and self._new(logged, action.action_id):
                self._taken.add(action.action_id)
                turn.answer(request, action.choice)

    async def stop(self, action: Action) -> None:
        """Log a stop; it ends the running turn, if any (and changes nothing else)."""
        async with self._lock:
            logged = await self.scribe.log(action.event(), once=f"stop:{action.action_id}")
            if logged.fresh and self._running is not None:
                await self._abort(self._running, "stopped")

    async def close(self) -> None:
        """Closing for good: the running turn ends, waiting messages get an error."""
        async with self._lock:
            if self._running is not None:
                await self._end(self._running, "closed")
            while self._pending:
                message = self._pending.popleft()
                turn_id = turn_id_of(message)
                error = {
                    "code": "conversation_closed",
                    "message": "the conversation was closed",
                    "turn_id": turn_id,
                }
                if message.kind == "message":
                    error["action_id"] = turn_id
                last = not self._pending
                await self.scribe.log(
                    NewEvent("system", "error", error),
                    once=f"late:{turn_id}",
                    turn_from="-" if last else str(self._pending[0].id),
                )

    # --- a new owner picks up where the last one left -----------------------------------
    async def resume(self, since: list[Event]) -> None:
        """Rebuild the turns from the log since the oldest unfinished one, and run on."""
        found = _unfinished(since)
        async with self._lock:
            if not found.order:
                if since:
                    await self.scribe.log(turn_from="-")  # nothing left to resume
                return
            first, *rest = found.order
            self._taken.update(found.order)
            self._pending.extend(found.messages[t] for t in rest)
            turn = LiveTurn(
                self, found.messages[first], found.steps[first], found.steered[first], found.answers
            )
            if _stopped_after(since, turn.message):
                await self._end_logged(turn, "stopped")
                await self._start_next()
                return
            self._log.info("turn_resumed", turn_id=first, steps=len(turn.steps))
            self._running = Running(turn, asyncio.create_task(self._run(turn)))

    async def halt(self) -> None:
        """Stop the running turn without a word (drain, fencing): the next owner resumes it."""
        running, self._running = self._running, None
        if running is not None:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
        await self.streamer.close()

    # --- a turn's life ------------------------------------------------------------------
    def _start(self, message: Event, steps: list[Event], steered: list[Event]) -> None:
        turn = LiveTurn(self, message, steps, steered)
        self._running = Running(turn, asyncio.create_task(self._run(turn)))

    async def _start_next(self) -> None:
        """Lock held: the next waiting message (or timer) gets its turn."""
        if not self._pending:
            return
        message = self._pending.popleft()
        turn_id = turn_id_of(message)
        await self.scribe.log(state("running", turn_id=turn_id), once=f"running:{turn_id}")
        self._start(message, [], [])

    async def _run(self, turn: LiveTurn) -> None:
        try:
            resumed = len(turn.steps)
            with tracing.span(
                "fleet.turn", {"fleet.turn_id": turn.turn_id, "fleet.resumed": resumed}
            ):
                await self.agent.run_turn(turn)
            if not turn.finished:
                raise TurnFailed("agent_silent", "the agent ended its turn without an answer")
        except asyncio.CancelledError:
            raise
        except (LeaseLost, RedisError, Unavailable) as exc:
            # Ours, not the agent's: the loop stops, and the turn resumes from the log.
            self._log.warning("turn_cut_short", turn_id=turn.turn_id, error=repr(exc))
            self._on_failure(exc)
        except Exception as exc:
            if not isinstance(exc, TurnFailed):
                self._log.exception("agent_failed", turn_id=turn.turn_id)
                exc = TurnFailed("agent_failed", f"agent failed: {exc!r}")
            try:
                await self._fail(turn, exc)
            except Exception as failure:  # the turn is unfinished in the log: it resumes
                self._on_failure(failure)

    async def finish(self, turn: LiveTurn, content: str, data: Mapping[str, Any]) -> None:
        """The turn's last message, in reply to its user message; then the next turn."""
        await self.streamer.end_step()
        async with self._lock:
            if self._running is None or self._running.turn is not turn:
                return  # ended meanwhile (its task is being cancelled)
            step, tid = turn.step, turn.turn_id
            reply = {**data, "content": content, "in_reply_to": tid, "turn_id": tid, "step": step}
            if turn.steered_ids:
                reply["steered"] = list(turn.steered_ids)
            await self.scribe.log(
                NewEvent("agent", "message", reply),
                idle(),
                once=f"reply:{tid}",
                turn_from=self._next_from(),
                logged_step=f"{tid} {step}",
            )
            turn.finished = True
            self._ended()
            await self._start_next()

    async def _fail(self, turn: LiveTurn, failure: TurnFailed) -> None:
        async with self._lock:
            if self._running is None or self._running.turn is not turn:
                return
            error = {"turn_id": turn.turn_id, "code": failure.code, "message": failure.message}
            await self.scribe.log(
                NewEvent("agent", "error", error),
                idle(),
                once=f"end:{turn.turn_id}",
                turn_from=self._next_from(),
            )
            turn.finished = True
            self._ended()
            await self._start_next()

    async def _abort(self, running: Running, reason: AbortReason) -> None:
        """Lock held: cancel the running turn, log why, start the next one."""
        await self._end(running, reason)
        await self._start_next()

    async def _end(self, running: Running, reason: AbortReason) -> None:
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task
        await self.streamer.close()
        await self._end_logged(running.turn, reason)

    async def _end_logged(self, turn: LiveTurn, reason: AbortReason) -> None:
        aborted = NewEvent("agent", "turn_aborted", {"turn_id": turn.turn_id, "reason": reason})
        events = (aborted,) if reason == "closed" else (aborted, idle())
        await self.scribe.log(
            *events,
            once=f"end:{turn.turn_id}",
            turn_from=self._next_from(),
            requests=RequestChange(close=turn.open_request),  # no answer will be taken
        )
        self._log.info("turn_aborted", turn_id=turn.turn_id, reason=reason)
        self._ended()

    def _ended(self) -> None:
        self._running = None
        self.last_end = time.monotonic()

    def _next_from(self) -> str:
        """``turn_from`` once the running turn ends: the next waiting one's, or none."""
        return str(self._pending[0].id) if self._pending else "-"


@dataclass(slots=True)
class Unfinished:
    """The log since the oldest unfinished turn, sorted out: the unfinished turns' ids in
    order, with their first events, logged steps and steered messages, and every
    approval answer logged (by request id)."""

    order: list[str] = field(default_factory=list)
    messages: dict[str, Event] = field(default_factory=dict)
    steps: dict[str, list[Event]] = field(default_factory=dict)
    steered: dict[str, list[Event]] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)


def _unfinished(since: list[Event]) -> Unfinished:
    found = Unfinished()
    done: set[str] = set()
    for event in since:
        data = event.data
        if (event.source, event.kind) in (("user", "message"), ("system", "timer")):
            into = data.get("steered_into")
            if into:
                found.steered.setdefault(into, []).append(event)
            else:
                turn_id = turn_id_of(event)
                found.order.append(turn_id)
                found.messages[turn_id] = event
        elif event.source == "user" and event.kind == "approval":
            found.answers[data["request_id"]] = data["choice"]
        elif event.source == "agent" and "turn_id" in data:
            if "in_reply_to" in data or event.kind in ("turn_aborted", "error"):
                done.add(data["turn_id"])
            elif "step" in data:
                found.steps.setdefault(data["turn_id"], []).append(event)
        elif event.source == "system" and event.kind == "error" and "turn_id" in data:
            done.add(data["turn_id"])  # answered when its conversation closed
        elif event.source == "system" and event.kind == "error" and "action_id" in data:
            done.add(data["action_id"])  # (as logged before errors named the turn)
    found.order = [t for t in found.order if t not in done]
    for t in found.order:
        found.steps.setdefault(t, [])
        found.steered.setdefault(t, [])
    return found


def _stopped_after(since: list[Event], message: Event) -> bool:
    """A stop was logged while the turn ran (its owner died before ending it)."""
    turn_id = turn_id_of(message)
    began = next(
        (e.id for e in since if e.kind == "state" and e.data.get("turn_id") == turn_id), None
    )
    return began is not None and any(
        e.id > began and e.source == "user" and e.kind == "stop" for e in since
    )
