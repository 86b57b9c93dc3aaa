"""The LLM agent (``FLEET_AGENT=workers.agents.llm:LLMAgent``): each turn asks an
OpenAI-compatible chat model, streaming its answer, runs the tools it calls and asks
again, until an answer calls no tool: that one is the turn's reply.

Every completed step is logged (an answer that calls tools, each tool's result), so a
turn cut short by a crash or a drain resumes on its next owner from ``turn.steps``:
the calls whose results are missing are run, then the model is asked for the next
step. Nothing logged is asked for or run again. A tool marked ``needs_approval`` runs
only once the user answers ``yes`` to an approval request; the wait survives crashes
and passivation like any step.

It also answers owner queries (``complete``): the client's messages as they are, to
the same model with the same settings, without tools, streamed and joined.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from openai import AsyncOpenAI

from broker import tracing
from broker.events import ChatMessage, Event
from broker.settings import Settings
from workers.agents import Turn, TurnFailed
from workers.agents.chat import Answer, ToolCall, ask
from workers.agents.clients import shared_client
from workers.agents.tools import Registry, load_registry
from workers.agents.transcript import SYSTEM_PROMPT, Transcript, as_chat, is_user_message

log = structlog.get_logger()

# LLM calls per turn: a model that keeps calling tools must not run up costs forever.
MAX_LLM_CALLS = 8
# What the user may answer when a tool that needs approval is called.
APPROVAL_OPTIONS = ("yes", "no")
# Events of earlier turns read from the log at most: with FLEET_LLM_HISTORY_CHARS, what
# a turn costs stays bounded however long the conversation grew.
HISTORY_EVENTS = 2_000


class LLMAgent:
    """An agent backed by the chat model of ``settings.llm_*``, with the tools of
    ``settings.tools`` (none if unset)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        max_llm_calls: int = MAX_LLM_CALLS,
    ) -> None:
        if registry is None:
            registry = load_registry(settings.tools) if settings.tools else Registry()
        self.registry = registry
        self.settings = settings
        self.system_prompt = system_prompt
        self.max_llm_calls = max_llm_calls

    @property
    def client(self) -> AsyncOpenAI:
        """The process's client for these settings (see ``clients``)."""
        return shared_client(self.settings)

    async def run_turn(self, turn: Turn) -> None:
        """Ask, run tools, ask again, ... then ``finish`` with the answer that calls no
        tool; resume from ``turn.steps`` if some were logged already."""
        transcript = Transcript(
            self.system_prompt,
            budget=self.settings.llm_history_chars,
            turn_message=turn.message.id,
        )
        history = await turn.history(after=max(-1, turn.message.id - HISTORY_EVENTS - 1))
        transcript.extend(_logged(history, turn))
        calls = sum(1 for step in turn.steps if step.kind == "message")
        pending = unanswered(turn.steps)
        if turn.steps:
            _bind(turn).info("turn_resumed", steps=len(turn.steps), tools_to_run=len(pending))
        while True:
            for call in pending:
                transcript.add(await self._run_tool(turn, call))
            # A step boundary: what the user steered in meanwhile goes with the next ask.
            transcript.extend(turn.steered())
            if calls >= self.max_llm_calls:
                raise _too_many(calls)
            answer = await self._ask(turn, transcript)
            calls += 1
            if not answer.tool_calls:
                await turn.finish(answer.content)
                return
            if calls >= self.max_llm_calls:
                raise _too_many(calls)  # before its tools run: their results would go unread
            step = await turn.log_step(
                "message",
                {
                    "content": answer.content,
                    "tool_calls": [call.to_data() for call in answer.tool_calls],
                },
            )
            transcript.add(step)
            pending = answer.tool_calls

    async def _ask(self, turn: Turn, transcript: Transcript) -> Answer:
        bound = _bind(turn)
        started = time.monotonic()
        try:
            with tracing.span(
                "llm.chat", {"gen_ai.request.model": self.settings.llm_model}, tracing.Kind.CLIENT
            ):
                answer = await ask(
                    self.client,
                    self.settings.llm_model,
                    transcript.messages(),
                    self.registry.schemas(),
                    turn.stream,
                )
        except TurnFailed as failed:
            bound.warning("llm_failed", code=failed.code, error=failed.message)
            raise
        bound.info(
            "llm_answered",
            chars=len(answer.content),
            tool_calls=[call.name for call in answer.tool_calls],
            seconds=round(time.monotonic() - started, 3),
        )
        return answer

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """An owner query: the model's answer to ``messages`` (raises ``TurnFailed``)."""
        answer = await ask(self.client, self.settings.llm_model, as_chat(messages), (), _unseen)
        return answer.content

    async def _run_tool(self, turn: Turn, call: ToolCall) -> Event:
        if (
            self.registry.needs_approval(call.name)
            and await turn.ask_approval(
                f"Allow {call.name}({call.arguments})?", APPROVAL_OPTIONS, key=call.id
            )
            != "yes"
        ):
            content = f"error: the user did not allow this call of {call.name}"
        else:
            with tracing.span("tool", {"gen_ai.tool.name": call.name}):
                content = await self.registry.run(call.name, call.arguments)
        return await turn.log_step(
            "tool_result", {"tool_call_id": call.id, "name": call.name, "content": content}
        )


def unanswered(steps: Sequence[Event]) -> list[ToolCall]:
    """The tool calls of the turn's last logged answer that have no logged result: what
    a resumed turn runs before it asks the model again (in the order they were asked)."""
    answered: set[str] = set()
    for step in reversed(steps):
        if step.kind == "tool_result":
            answered.add(step.data.get("tool_call_id", ""))
        elif step.kind == "message":
            calls = step.data.get("tool_calls") or []
            return [
                ToolCall(str(call["id"]), str(call["name"]), str(call.get("arguments", "")))
                for call in calls
                if call["id"] not in answered
            ]
    return []


def _logged(history: Sequence[Event], turn: Turn) -> list[Event]:
    """The conversation up to this turn, oldest first: the log, with the turn's message
    and steps in case the log was read before they were all in it; without the user
    messages logged since that wait for turns of their own (busy policy enqueue)."""
    by_id = {event.id: event for event in (*history, turn.message, *turn.steps)}
    return [
        by_id[event_id] for event_id in sorted(by_id) if not _queued_after(by_id[event_id], turn)
    ]


def _queued_after(event: Event, turn: Turn) -> bool:
    return (
        event.id > turn.message.id
        and is_user_message(event)
        and event.data.get("steered_into") != turn.turn_id
    )


def _unseen(text: str) -> None:
    """A query's answer is streamed only to be joined: nobody watches it come."""


def _too_many(calls: int) -> TurnFailed:
    return TurnFailed("too_many_steps", f"no final answer after {calls} LLM calls (the limit)")


def _bind(turn: Turn) -> Any:
    return log.bind(conversation_id=turn.conversation_id, turn_id=turn.turn_id)
