"""Agents for fault tests, loaded by real worker processes through FLEET_AGENT."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from broker.events import NewEvent
from broker.settings import Settings
from workers.agents import Turn


class EpochEcho:
    """The echo agent, with the fencing token it ran under in each reply."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        await turn.finish(turn.message.data["content"], epoch=turn.epoch)


class CrashingEcho(EpochEcho):
    """Kills its own worker once per marker: on "crash-before-reply" once the user
    message is logged (before or after it is acked) but before any reply; on
    "crash-after-reply" once the reply is logged. ``CRASH_MARKERS`` names a directory."""

    async def run_turn(self, turn: Turn) -> None:
        content = turn.message.data["content"]
        if content == "crash-before-reply":
            crash_once(content)
        await super().run_turn(turn)
        if content == "crash-after-reply":
            crash_once(content)


def crash_once(name: str) -> None:
    if claim_once(name):
        os.kill(os.getpid(), signal.SIGKILL)


class Chatty:
    """Answers "count N" with N agent messages, a few milliseconds apart (N - 1 steps,
    then the turn's last message): a stream of events that goes on while clients come
    and go."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        count = int(turn.message.data["content"].split()[1])
        for i in range(len(turn.steps), count - 1):
            await turn.log_step("message", {"content": str(i)})
            await asyncio.sleep(0.005)
        await turn.finish(str(count - 1))


class Burst:
    """Answers "burst N" with N agent messages logged together (one batch, one broker
    message): many events for a client at once, live and in a replay."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        content = turn.message.data["content"]
        if content.startswith("burst "):
            replies = [
                NewEvent("agent", "message", {"content": str(i), "in_reply_to": turn.turn_id})
                for i in range(int(content.split()[1]))
            ]
            await turn.log(*replies, once="burst")
        await turn.finish("done")


class LoopBlocker(EpochEcho):
    """On "block-loop", blocks its worker's whole event loop (a synchronous call) for
    ``BLOCK_SECONDS``, once per marker in ``CRASH_MARKERS``; answers as the echo does."""

    async def run_turn(self, turn: Turn) -> None:
        content = turn.message.data["content"]
        if content == "block-loop" and claim_once(content):
            time.sleep(float(os.environ["BLOCK_SECONDS"]))  # noqa: ASYNC251 (the point)
        await super().run_turn(turn)


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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        content = turn.message.data["content"]
        if content.startswith("flood "):
            _, count, size = content.split()
            body = "x" * int(size)
            for first in range(0, int(count), 100):
                batch = [
                    NewEvent("agent", "message", {"content": body, "in_reply_to": turn.turn_id})
                    for _ in range(first, min(first + 100, int(count)))
                ]
                await turn.log(*batch, once=f"flood:{first}")
        await turn.finish("done")


class Alarms:
    """Schedules and cancels timers on command: "set NAME SECONDS" answers the timer's
    id, "cancel ID" answers whether one was cancelled, and a timer that fires is
    answered with its payload's name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        if turn.message.kind == "timer":
            await turn.finish(f"ring {turn.message.data['payload']['name']}")
            return
        command, *args = turn.message.data["content"].split()
        if command == "set":
            name, seconds = args
            at = turn.message.ts + float(seconds)
            await turn.finish(await turn.schedule(at, {"name": name}, key=name))
        else:
            await turn.finish(str(await turn.cancel_timer(args[0])))


class Recall:
    """Answers each message with what ``turn.history()`` says: whether its ids run
    from 0 with no gap, and every user message so far ("ids ok: m0 m1 m2")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def run_turn(self, turn: Turn) -> None:
        history = await turn.history()
        consecutive = [event.id for event in history] == list(range(len(history)))
        said = [e.data["content"] for e in history if e.source == "user" and e.kind == "message"]
        await turn.finish(f"{'ids ok' if consecutive else 'ids broken'}: {' '.join(said)}")
