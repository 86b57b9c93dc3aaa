"""Agents for fault tests, loaded by real worker processes through FLEET_AGENT."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence

import orjson

from broker.amqp import Broker
from broker.events import NewEvent
from broker.settings import Settings
from workers.agents import Turn


class EpochEcho:
    """The echo agent, with the fencing token it ran under and its worker's pid in each
    reply. Each turn takes ``TURN_SECONDS`` (default 0) before it answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.turn_seconds = float(os.environ.get("TURN_SECONDS", "0"))

    async def run_turn(self, turn: Turn) -> None:
        if self.turn_seconds:
            await asyncio.sleep(self.turn_seconds)
        await turn.finish(turn.message.data["content"], epoch=turn.epoch, pid=os.getpid())


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


class DiesBeforePublishing(EpochEcho):
    """On "die-before-publish", once per marker in ``CRASH_MARKERS``: answers, and its
    worker is SIGKILLed once the answer is logged in Redis, before it is published to
    the gateways. Nobody publishes it later: the turn is finished in the log."""

    async def run_turn(self, turn: Turn) -> None:
        if turn.message.data["content"] == "die-before-publish" and claim_once("die"):
            die_before_publishing(turn.conversation_id, turn.turn_id)
        await super().run_turn(turn)


def die_before_publishing(cid: str, turn_id: str) -> None:
    """Make this process's next publish of the reply to ``turn_id`` kill it instead."""
    publish = Broker.publish_events

    async def publish_or_die(self: Broker, cid_: str, entries: Sequence[bytes]) -> None:
        replying = any(
            orjson.loads(entry)["data"].get("in_reply_to") == turn_id for entry in entries
        )
        if cid_ == cid and replying:
            os.kill(os.getpid(), signal.SIGKILL)
        await publish(self, cid_, entries)

    Broker.publish_events = publish_or_die  # type: ignore[method-assign,assignment]


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
