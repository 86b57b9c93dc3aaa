"""Real clients: HTTP to create conversations, python-socketio (websocket) to talk to them."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiohttp
import socketio

T = TypeVar("T")

ACK_TIMEOUT = 30.0


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``jobs`` with at most ``limit`` at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def create(
    http: aiohttp.ClientSession, url: str, token: str, initial: str | None = None
) -> str:
    """``POST /api/conversations``; the new conversation's id."""
    body = {} if initial is None else {"initial_message": initial}
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{url}/api/conversations", json=body, headers=headers) as response:
        if response.status != 201:
            raise RuntimeError(f"create: {response.status} {await response.text()}")
        payload = await response.json()
    return str(payload["conversation_id"])


async def create_all(url: str, tokens: Sequence[str], count: int, limit: int = 20) -> list[Session]:
    """``count`` new conversations spread over the users of ``tokens``, each with a client
    (not connected yet) that acts as its owner."""
    async with aiohttp.ClientSession() as http:
        cids = await bounded(
            limit, [partial(create, http, url, tokens[i % len(tokens)]) for i in range(count)]
        )
    return [Session(cid, tokens[i % len(tokens)]) for i, cid in enumerate(cids)]


class Session:
    """One Socket.IO client in one conversation; records every reply by action id.

    Times are ``time.perf_counter()`` in this process.
    """

    def __init__(self, cid: str, token: str) -> None:
        self.cid = cid
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("event", self._on_event)
        self.sio.on("stream", self._on_frame)
        self.ids: list[int] = []  # event ids in arrival order
        # (wall-clock arrival, frame) of each stream frame; and turn id -> frames seen
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.streamed: dict[str, int] = {}
        self.aborted: dict[str, float] = {}  # turn id -> arrival of its turn_aborted
        self.aborted_ts: dict[str, float] = {}  # turn id -> its turn_aborted's ts (wall)
        self.replies: dict[str, list[float]] = {}  # action id -> arrival of each reply
        self.sent: dict[str, float] = {}  # action id -> when it was sent
        self.acked: dict[str, float] = {}  # action id -> when the ack said ok
        self.acked_wall: dict[str, float] = {}  # action id -> when the ack said ok (wall)
        self.refused: dict[str, str] = {}  # action id -> why it was not acknowledged
        self._waiting: dict[str, asyncio.Future[float]] = {}

    async def connect(self, url: str) -> Session:
        auth = {"token": self.token, "conversation_id": self.cid, "latest_event_id": -1}
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=20)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append((time.time(), frame))
        self.streamed[frame["turn_id"]] = self.streamed.get(frame["turn_id"], 0) + 1

    async def _on_event(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.ids.append(event["id"])
        if event["kind"] == "turn_aborted":
            self.aborted[event["data"]["turn_id"]] = now
            self.aborted_ts[event["data"]["turn_id"]] = event["ts"]
        if event["source"] == "agent" and event["kind"] == "message":
            action_id = event["data"].get("in_reply_to")
            self.replies.setdefault(action_id, []).append(now)
            waiter = self._waiting.pop(action_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)

    def expect(self, action_id: str) -> asyncio.Future[float]:
        """A future for the arrival time of the first reply to ``action_id``."""
        waiter = asyncio.get_running_loop().create_future()
        if action_id in self.replies:
            waiter.set_result(self.replies[action_id][0])
        else:
            self._waiting[action_id] = waiter
        return waiter

    async def send(self, action_id: str, content: str = "ping", kind: str = "message") -> bool:
        """Send one action; True once the gateway acknowledged it (broker confirmed)."""
        payload: dict[str, Any] = {"kind": kind, "action_id": action_id}
        if kind == "message":
            payload["data"] = {"content": content}
        self.sent[action_id] = time.perf_counter()
        try:
            ack = await self.sio.call("user_action", payload, timeout=ACK_TIMEOUT)
        except Exception as exc:  # a timed-out ack: not acknowledged, so not owed
            self.refused[action_id] = repr(exc)
            return False
        if isinstance(ack, dict) and ack.get("ok"):
            self.acked[action_id] = time.perf_counter()
            self.acked_wall[action_id] = time.time()
            return True
        self.refused[action_id] = repr(ack)
        return False

    async def ask(self, action_id: str, timeout: float = ACK_TIMEOUT) -> float:
        """Send an action and wait for its reply; seconds from send to reply."""
        waiter = self.expect(action_id)
        if not await self.send(action_id):
            waiter.cancel()
            raise RuntimeError(f"{action_id} refused: {self.refused[action_id]}")
        arrived = await asyncio.wait_for(waiter, timeout)
        return arrived - self.sent[action_id]

    def unanswered(self) -> list[str]:
        return [a for a in self.acked if a not in self.replies]


async def connect_all(url: str, sessions: list[Session], limit: int = 50) -> None:
    await bounded(limit, [partial(s.connect, url) for s in sessions])
    # What the bench holds now lives through the window: frozen, its full collections
    # (60-140 ms each here: a hundred clients and earlier scenarios' results in one
    # process) no longer stall every client at once and count against the fleet.
    gc.freeze()


async def close_all(sessions: list[Session], limit: int = 100) -> None:
    await bounded(limit, [s.close for s in sessions])
    gc.unfreeze()


async def settle(sessions: list[Session], timeout: float) -> int:
    """Wait (bounded) until every acknowledged action has a reply; how many still lack one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = sum(len(s.unanswered()) for s in sessions)
        if missing == 0:
            return 0
        await asyncio.sleep(0.1)
    return sum(len(s.unanswered()) for s in sessions)
