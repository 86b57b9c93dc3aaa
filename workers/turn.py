"""A turn as its agent sees it (``workers.agents.Turn``), backed by its runner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from broker.events import Event, NewEvent

if TYPE_CHECKING:
    from workers.turns import TurnRunner


class LiveTurn:
    """One running turn: its user message, the steps logged so far, what was steered in."""

    def __init__(
        self, runner: TurnRunner, message: Event, steps: list[Event], steered: list[Event]
    ) -> None:
        self._runner = runner
        self.conversation_id = message.conversation_id
        self.turn_id: str = message.data["action_id"]
        self.epoch = runner.epoch
        self.message = message
        self.steps = steps
        self.steered_ids = [event.data["action_id"] for event in steered]
        self._untaken = list(steered)
        self.finished = False

    @property
    def step(self) -> int:
        """The index of the step being made."""
        return len(self.steps)

    def stream(self, delta: str) -> None:
        self._runner.streamer.add(self.turn_id, self.step, delta)

    async def log_step(self, kind: str, data: Mapping[str, Any]) -> Event:
        await self._runner.streamer.end_step()
        step = self.step
        event = NewEvent("agent", kind, {**data, "turn_id": self.turn_id, "step": step})
        logged = await self._runner.scribe.log(
            event, once=f"step:{self.turn_id}:{step}", logged_step=f"{self.turn_id} {step}"
        )
        self.steps.append(logged.events[0])
        return logged.events[0]

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

    async def history(self) -> list[Event]:
        return await self._runner.scribe.history()
