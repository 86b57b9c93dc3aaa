"""The echo agent: answers each user message with its own content.

With ``FLEET_ECHO_DELAY`` > 0 it streams its reply a word per frame, that many
seconds apart, before logging it; messages steered into the turn are echoed too, each
on a line of its own.
"""

from __future__ import annotations

import asyncio

from broker.settings import Settings
from workers.agents import Turn


class EchoAgent:
    """For message X with action id A: state running, message X in reply to A, state
    awaiting_user_input (the runner logs the states)."""

    def __init__(self, settings: Settings) -> None:
        self.delay = settings.echo_delay

    async def run_turn(self, turn: Turn) -> None:
        content: str = turn.message.data["content"]
        if self.delay:
            words = content.split(" ")
            for i, word in enumerate(words):
                turn.stream(word if i == len(words) - 1 else word + " ")
                await asyncio.sleep(self.delay)
        steered = [message.data["content"] for message in turn.steered()]
        await turn.finish("\n".join([content, *steered]))
