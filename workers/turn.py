"""A turn as its agent sees it (``workers.agents.Turn``), backed by its runner."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from broker.events import Event, NewEvent, state, turn_id_of
from broker.store import RequestChange

if TYPE_CHECKING:
    from workers.turns import TurnRunner


class LiveTurn:
    """One running turn: its first event (a user message, or a timer), the steps logged
    so far, what was steered in, and its approval requests with their answers."""

    def __init__(
        self,
        runner: TurnRunner,
        message: Event,
        steps: list[Event],
        steered: list[Event],
        answers: Mapping[str, str] | None = None,
    ) -> None:
        self._runner = runner
        self.conversation_id = message.conversation_id
        self.turn_id = turn_id_of(message)
        self.epoch = runner.epoch
        self.message = message
        self.steps = steps
        self.steered_ids = [event.data["action_id"] for event in steered]
        self._untaken = list(steered)
        self.finished = False
        # Approval requests asked (logged) and answered; asks and timers are numbered
        # in the order the agent makes them, so a resumed turn finds the same ids.
        self.requests = {s.data["request_id"] for s in steps if s.kind == "approval_request"}
        self.answers = dict(answers or {})
        self.awaiting: asyncio.Future[str] | None = None
        self._asks = 0
        self._timers = 0

    @property
    def step(self) -> int:
        """The index of the step being made."""
        return len(self.steps)

    @property
    def open_request(self) -> str:
        """The approval request asked and not answered ('' if none)."""
        return next((r for r in self.requests if r not in self.answers), "")

    def stream(self, delta: str) -> None:
        self._runner.streamer.add(self.turn_id, self.step, delta)

    async def log_step(self, kind: str, data: Mapping[str, Any]) -> Event:
        return await self._log_step(kind, data)

    async def _log_step(
        self,
        kind: str,
        data: Mapping[str, Any],
        *extra: NewEvent,
        opens: RequestChange | None = None,
    ) -> Event:
        """Log the step (with ``extra`` events after it, and the approval request it
        ``opens``): what is streamed next belongs to the next step."""
        await self._runner.streamer.end_step()
        step = self.step
        event = NewEvent("agent", kind, {**data, "turn_id": self.turn_id, "step": step})
        logged = await self._runner.scribe.log(
            event,
            *extra,
            once=f"step:{self.turn_id}:{step}",
            logged_step=f"{self.turn_id} {step}",
            requests=opens or RequestChange(),
        )
        self.steps.append(logged.events[0])
        return logged.events[0]

    async def ask_approval(
        self, prompt: str, options: Sequence[str] = ("yes", "no"), key: str | None = None
    ) -> str:
        if key is None:
            key = f"a{self._asks}"
            self._asks += 1
        request_id = f"{self.turn_id}:{key}"
        if request_id not in self.requests:
            self.requests.add(request_id)  # first: its answer may come in while it is logged
            data = {"request_id": request_id, "prompt": prompt, "options": list(options)}
            waiting = state("awaiting_approval", turn_id=self.turn_id)
            opens = RequestChange(open=request_id, options=options)
            await self._log_step("approval_request", data, waiting, opens=opens)
        if request_id in self.answers:
            return self.answers[request_id]
        self.awaiting = asyncio.get_running_loop().create_future()
        try:
            return await self.awaiting
        finally:
            self.awaiting = None

    def answer(self, request_id: str, choice: str) -> None:
        """The user's answer to one of this turn's requests (logged already)."""
        self.answers[request_id] = choice
        if self.awaiting is not None and not self.awaiting.done():
            self.awaiting.set_result(choice)

    async def schedule(self, at: float, payload: Any, key: str | None = None) -> str:
        if key is None:
            key = f"t{self._timers}"
            self._timers += 1
        timer_id = f"{self.turn_id}:{key}"
        await self._runner.scribe.schedule(timer_id, at, payload)
        return timer_id

    async def cancel_timer(self, timer_id: str) -> bool:
        return await self._runner.scribe.cancel(timer_id)

    def steered(self) -> list[Event]:
        taken, self._untaken = self._untaken, []
        return taken

    def steer_in(self, message: Event) -> None:
        """A user message steered into this turn (the ``steer`` busy policy)."""
        self._untaken.append(message)
        self.steered_ids.append(message.data["action_id"])

    async def finish(self, content: str, **data: Any) -> None:
        await self._runner.finish(self, content, data)

    async def log(self, *events: NewEvent, once: str) -> list[Event]:
        return (await self._runner.scribe.log(*events, once=f"{self.turn_id}:{once}")).events

    async def history(self, after: int = -1) -> list[Event]:
        return await self._runner.scribe.history(after)
