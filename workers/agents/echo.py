"""The echo agent: answers each user message with its own content."""

from __future__ import annotations

from broker.events import Event, NewEvent, state
from workers.agents import AgentContext


class EchoAgent:
    """For message X with action id A: state running, message X in reply to A, state awaiting."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        if event.source != "user" or event.kind != "message":
            return
        action_id = event.data["action_id"]
        await context.emit(
            state("running"),
            NewEvent(
                "agent", "message", {"content": event.data["content"], "in_reply_to": action_id}
            ),
            state("awaiting_user_input"),
            once=f"reply:{action_id}",
        )
