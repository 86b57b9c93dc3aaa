"""The echo agent: answers each user message with its own content.

With ``FLEET_ECHO_DELAY`` > 0 it streams its reply a word per frame, that many
seconds apart, before logging it; messages steered into the turn are echoed too, each
on a line of its own. Two commands exercise approvals and timers without an LLM:
``/approve TEXT`` asks for approval (options yes, no) and answers TEXT if the choice
is yes, ``denied`` otherwise; ``/remind N TEXT`` answers ``scheduled`` at once and
answers TEXT again when a timer due N seconds later fires.
"""

from __future__ import annotations

import asyncio

from broker.settings import Settings
from workers.agents import Turn

USAGE = "usage: /remind SECONDS TEXT"


class EchoAgent:
    """For message X with action id A: state running, message X in reply to A, state
    awaiting_user_input (the runner logs the states)."""

    def __init__(self, settings: Settings) -> None:
        self.delay = settings.echo_delay

    async def run_turn(self, turn: Turn) -> None:
        if turn.message.kind == "timer":
            await turn.finish(str(turn.message.data["payload"]["text"]))
            return
        content: str = turn.message.data["content"]
        command, _, rest = content.partition(" ")
        if command == "/approve":
            choice = await turn.ask_approval(f"Approve: {rest}?", ["yes", "no"])
            await turn.finish(rest if choice == "yes" else "denied")
        elif command == "/remind":
            await turn.finish(await self._remind(turn, rest))
        else:
            await self._echo(turn, content)

    async def _remind(self, turn: Turn, rest: str) -> str:
        seconds, _, text = rest.partition(" ")
        try:
            delay = float(seconds)
        except ValueError:
            return USAGE
        if not text or not 0 <= delay <= 366 * 86400:
            return USAGE
        # Due from the message's time, not the clock: a resumed turn schedules the same.
        await turn.schedule(turn.message.ts + delay, {"text": text})
        return "scheduled"

    async def _echo(self, turn: Turn, content: str) -> None:
        if self.delay:
            words = content.split(" ")
            for i, word in enumerate(words):
                turn.stream(word if i == len(words) - 1 else word + " ")
                await asyncio.sleep(self.delay)
        steered = [message.data["content"] for message in turn.steered()]
        await turn.finish("\n".join([content, *steered]))
