"""The agent interface: what a worker runs for each turn of a conversation.

A turn is the agent's work on one user message (its ``turn_id`` is that message's
``action_id``), or on one of its timers that fired (``turn_id`` is the timer's id).
It runs as a cancellable task: a stop, an interruption, a close or a change of owner
cancels it at its next ``await``. An agent logs each step it
completes (an LLM answer, a tool result) with ``log_step``, streams the text of the
step it is making with ``stream``, and ends the turn with ``finish``. If its owner
dies or drains mid-turn, the next owner runs the turn again with ``turn.steps``
holding what was logged: an agent resumes from the last logged step, never from
scratch, and nothing it logged is logged twice.

An agent may also answer owner queries (``Completer``): a completion of the messages
a client sends, with the conversation's LLM settings, outside any turn and logged
nowhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from broker.events import ChatMessage, Event, NewEvent
from broker.settings import ConfigError, Settings


class TurnFailed(Exception):
    """Raised by an agent whose turn cannot go on (an LLM error, say): the turn ends
    with an ``error`` event carrying ``code`` and ``message``, and the conversation
    stays usable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Turn(Protocol):
    """One turn of one conversation, as its agent sees it."""

    @property
    def conversation_id(self) -> str: ...

    @property
    def turn_id(self) -> str:
        """The action_id of the user message that started the turn."""
        ...

    @property
    def epoch(self) -> int:
        """The fencing token of this run: pass it to external systems the agent writes
        to, so they too can refuse a stale owner."""
        ...

    @property
    def message(self) -> Event:
        """What started the turn: a user ``message``, or a ``timer`` that fired."""
        ...

    @property
    def steps(self) -> Sequence[Event]:
        """The steps logged so far: not empty when the turn resumes."""
        ...

    def stream(self, delta: str) -> None:
        """Show more text of the step being made, live: not logged, coalesced."""
        ...

    async def log_step(self, kind: str, data: Mapping[str, Any]) -> Event:
        """Log a completed step (kind ``message`` for an LLM answer, ``tool_result``
        for a tool's); its data gains ``turn_id`` and ``step``. What is streamed next
        belongs to the next step."""
        ...

    async def ask_approval(
        self, prompt: str, options: Sequence[str] = ("yes", "no"), key: str | None = None
    ) -> str:
        """Ask the user, and wait for the option they choose: logs an
        ``approval_request`` (a step of the turn) and state ``awaiting_approval``. The
        wait survives a crash, a drain and passivation: a resumed turn that asks again
        (with the same ``key``, or as the same ask in order) gets the same request, or
        its answer if it came. ``key`` names the ask within the turn (default: its
        number in order)."""
        ...

    async def schedule(self, at: float, payload: Any, key: str | None = None) -> str:
        """Schedule a wake-up at ``at`` (epoch seconds); its id. When due it is logged
        once as a ``system`` ``timer`` event (``timer_id``, ``payload``, ``at``) that
        starts a turn of its own (``turn.message``), even if the fleet was down then.
        Scheduling again with the same ``key`` (default: its number in the turn) moves
        it, so a resumed turn schedules nothing twice."""
        ...

    async def cancel_timer(self, timer_id: str) -> bool:
        """Cancel a timer not fired yet; False if there was none to cancel."""
        ...

    def steered(self) -> list[Event]:
        """User messages steered into this turn since the last call: take them at a
        step boundary (the ``steer`` busy policy)."""
        ...

    async def finish(self, content: str, **data: Any) -> None:
        """Log the turn's last message, in reply to its user message (listing the
        messages steered into it), and end the turn."""
        ...

    async def log(self, *events: NewEvent, once: str) -> list[Event]:
        """Log events of the agent's own making together, at most once per ``once``
        key ever (what the turn logs itself needs none of this)."""
        ...

    async def history(self, after: int = -1) -> list[Event]:
        """The conversation's events logged so far with ids above ``after`` (by
        default all of them), oldest first."""
        ...


class Agent(Protocol):
    """A conversation's agent: one instance per conversation and owner."""

    async def run_turn(self, turn: Turn) -> None:
        """Do the turn's work; call ``turn.finish`` to answer."""
        ...


@runtime_checkable
class Completer(Protocol):
    """An agent's optional capability: answer an owner query (``POST
    /api/conversations/{id}/completions``). Runs beside the turns, never queued behind
    one; raise ``TurnFailed`` (an LLM error's code) when it cannot answer."""

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """The model's answer to ``messages``, as they are (no system prompt added)."""
        ...


# Called once per conversation (and owner) with the worker's settings.
AgentFactory = Callable[[Settings], Agent]


def load_factory(spec: str) -> AgentFactory:
    """Resolve ``module:factory`` (``FLEET_AGENT``) to a callable taking the worker's
    ``Settings`` and returning an ``Agent`` (a class whose ``__init__`` takes them)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"FLEET_AGENT must look like 'module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"FLEET_AGENT {spec!r}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"FLEET_AGENT {spec!r}: {module_name} has no callable {attribute!r}")
    return factory  # type: ignore[no-any-return]
