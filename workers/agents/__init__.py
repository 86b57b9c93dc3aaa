"""The agent interface: what a worker runs for each conversation.

An agent sees every logged event of its conversation, in order, and answers by
emitting events. Delivery is at least once: after a crash the new owner hands the
agent the event again, so an agent passes ``once`` (e.g. the action id) to make
its answer land in the log exactly once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from broker.events import Event, NewEvent
from broker.settings import ConfigError


class AgentContext(Protocol):
    """What an agent may do with the conversation it runs in."""

    conversation_id: str
    # The fencing token of this run: pass it to external systems the agent writes
    # to, so they too can refuse a stale owner.
    epoch: int

    async def emit(self, *events: NewEvent, once: str = "") -> int:
        """Log ``events`` together (fenced), with ``once`` at most once ever; the first id."""
        ...

    async def history(self) -> list[Event]:
        """Every event logged so far, oldest first."""
        ...


class Agent(Protocol):
    """One conversation's agent."""

    async def on_event(self, event: Event, context: AgentContext) -> None: ...


AgentFactory = Callable[[], Agent]


def load_factory(spec: str) -> AgentFactory:
    """Resolve ``module:factory`` (``FLEET_AGENT``) to a callable returning an ``Agent``."""
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
