"""Agents for fault tests, loaded by real worker processes through FLEET_AGENT."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from broker.events import Event, NewEvent, state
from workers.agents import AgentContext


class EpochEcho:
    """The echo agent, with the fencing token it ran under in each reply."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        if event.source != "user" or event.kind != "message":
            return
        action_id = event.data["action_id"]
        reply = {"content": event.data["content"], "in_reply_to": action_id}
        await context.emit(
            state("running"),
            NewEvent("agent", "message", {**reply, "epoch": context.epoch}),
            state("awaiting_user_input"),
            once=f"reply:{action_id}",
        )


class CrashingEcho(EpochEcho):
    """Kills its own worker once per marker: on "crash-before-reply" after the user
    message is logged but before any reply; on "crash-after-reply" after the reply is
    logged but before the action is acked. ``CRASH_MARKERS`` names a directory."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        content = event.data.get("content") if event.source == "user" else None
        if content == "crash-before-reply":
            crash_once(content)
        await super().on_event(event, context)
        if content == "crash-after-reply":
            crash_once(content)


def crash_once(name: str) -> None:
    if claim_once(name):
        os.kill(os.getpid(), signal.SIGKILL)


class Chatty:
    """Answers "count N" with N agent messages, a few milliseconds apart: a stream of
    events that goes on while clients come and go."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        content = event.data.get("content", "") if event.source == "user" else ""
        if not content.startswith("count "):
            return
        action_id = event.data["action_id"]
        for i in range(int(content.split()[1])):
            data = {"content": str(i), "in_reply_to": action_id}
            await context.emit(NewEvent("agent", "message", data), once=f"{action_id}:{i}")
            await asyncio.sleep(0.005)


class Burst:
    """Answers "burst N" with N agent messages logged together (one batch, one broker
    message): many events for a client at once, live and in a replay."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        content = event.data.get("content", "") if event.source == "user" else ""
        if not content.startswith("burst "):
            return
        action_id = event.data["action_id"]
        count = int(content.split()[1])
        replies = [
            NewEvent("agent", "message", {"content": str(i), "in_reply_to": action_id})
            for i in range(count)
        ]
        await context.emit(*replies, once=f"burst:{action_id}")


class LoopBlocker(EpochEcho):
    """On "block-loop", blocks its worker's whole event loop (a synchronous call) for
    ``BLOCK_SECONDS``, once per marker in ``CRASH_MARKERS``; answers as the echo does."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        content = event.data.get("content") if event.source == "user" else None
        if content == "block-loop" and claim_once(content):
            time.sleep(float(os.environ["BLOCK_SECONDS"]))  # noqa: ASYNC251 (the point)
        await super().on_event(event, context)


def claim_once(name: str) -> bool:
    """True the first time any process asks for ``name`` (a file in ``CRASH_MARKERS``)."""
    try:
        os.close(os.open(os.path.join(os.environ["CRASH_MARKERS"], name), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class Flood:
    """Answers "flood COUNT SIZE" with COUNT agent messages of SIZE characters each,
    logged a hundred at a time: a big log, fast."""

    async def on_event(self, event: Event, context: AgentContext) -> None:
        content = event.data.get("content", "") if event.source == "user" else ""
        if not content.startswith("flood "):
            return
        action_id = event.data["action_id"]
        _, count, size = content.split()
        body = "x" * int(size)
        for first in range(0, int(count), 100):
            batch = [
                NewEvent("agent", "message", {"content": body, "in_reply_to": action_id})
                for _ in range(first, min(first + 100, int(count)))
            ]
            await context.emit(*batch, once=f"flood:{action_id}:{first}")
