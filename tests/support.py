"""Clients for tests: tokens, HTTP, and a Socket.IO client that records events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import socketio
from redis.asyncio import Redis, RedisCluster

from broker import tokens
from broker.events import Event
from broker.leases import Leases
from broker.names import Names
from broker.settings import Settings

EventList = list[dict[str, Any]]


def token(settings: Settings, user: str, ttl: float = 3600, admin: bool = False) -> str:
    return tokens.issue(settings.require_jwt_secret(), user, ttl, admin)


def http(base_url: str, bearer: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10)


async def create_conversation(base_url: str, bearer: str, initial: str | None = None) -> str:
    async with http(base_url, bearer) as client:
        body = {} if initial is None else {"initial_message": initial}
        response = await client.post("/api/conversations", json=body)
        assert response.status_code == 201, response.text
        cid: str = response.json()["conversation_id"]
        return cid


class Client:
    """A python-socketio client in one conversation, recording every event and stream
    frame it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: EventList = []
        self.arrivals: list[float] = []  # monotonic arrival time of each event
        self.frames: EventList = []
        self.text = StreamedText()
        self._changed = asyncio.Condition()
        self.sio.on("event", self._on_event)
        self.sio.on("stream", self._on_frame)

    async def _on_event(self, event: dict[str, Any]) -> None:
        async with self._changed:
            self.events.append(event)
            self.arrivals.append(time.monotonic())
            self._changed.notify_all()

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        async with self._changed:
            self.frames.append(frame)
            self.text.add(frame)
            self._changed.notify_all()

    async def stop(self, action_id: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"kind": "stop"}
        if action_id is not None:
            payload["action_id"] = action_id
        ack: dict[str, Any] = await self.sio.call("user_action", payload, timeout=15)
        return ack

    async def approve(
        self, request_id: str, choice: str, action_id: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "kind": "approval",
            "data": {"request_id": request_id, "choice": choice},
        }
        if action_id is not None:
            payload["action_id"] = action_id
        ack: dict[str, Any] = await self.sio.call("user_action", payload, timeout=15)
        return ack

    async def connect(
        self,
        url: str,
        bearer: str | None,
        cid: str,
        latest_event_id: int = -1,
        transports: tuple[str, ...] = ("websocket",),
    ) -> Client:
        auth: dict[str, Any] = {"conversation_id": cid, "latest_event_id": latest_event_id}
        if bearer is not None:
            auth["token"] = bearer
        await self.sio.connect(url, auth=auth, transports=list(transports), wait_timeout=10)
        return self

    async def act(self, content: str, action_id: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"kind": "message", "data": {"content": content}}
        if action_id is not None:
            payload["action_id"] = action_id
        ack: dict[str, Any] = await self.sio.call("user_action", payload, timeout=15)
        return ack

    async def wait_for(self, done: Callable[[EventList], bool], timeout: float = 10) -> EventList:
        """Wait until ``done(events)`` holds; fail with what arrived if it never does."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: done(self.events)), timeout)
            except TimeoutError:
                raise AssertionError(f"condition not met; events: {self.events}") from None
        return self.events

    async def close(self) -> None:
        await self.sio.disconnect()


class StreamedText:
    """What a client shows of streamed text, by the protocol's rules: per (turn, step),
    the deltas of one epoch appended in seq order with no gap; a higher epoch of a turn
    replaces it; anything else is a protocol violation, recorded in ``faults``."""

    def __init__(self) -> None:
        self.shown: dict[tuple[str, int], str] = {}  # (turn, step) -> text
        self._at: dict[tuple[str, int], tuple[int, int]] = {}  # -> (epoch, last seq)
        self.epochs: dict[str, int] = {}
        self.faults: list[str] = []

    def add(self, frame: dict[str, Any]) -> None:
        turn, step, epoch, seq = frame["turn_id"], frame["step"], frame["epoch"], frame["seq"]
        if epoch < self.epochs.get(turn, -1):
            self.faults.append(f"stale epoch {epoch} for {turn}")
            return
        if epoch > self.epochs.get(turn, -1):  # a new owner: what came before is replaced
            self.shown = {k: v for k, v in self.shown.items() if k[0] != turn}
            self._at = {k: v for k, v in self._at.items() if k[0] != turn}
            self.epochs[turn] = epoch
        key = (turn, step)
        last = self._at.get(key, (epoch, -1))[1]
        if key in self._at and seq != last + 1:
            self.faults.append(f"{turn} step {step}: seq {seq} after {last}")
        self.shown[key] = self.shown.get(key, "") + frame["delta"]
        self._at[key] = (epoch, seq)


def of_kind(events: EventList, kind: str) -> EventList:
    return [event for event in events if event["kind"] == kind]


def answers(events: EventList) -> list[str]:
    """Every turn's answer, in log order."""
    return [content for contents in replies(events).values() for content in contents]


def replied_to(action_id: str) -> Callable[[EventList], bool]:
    """A ``wait_for`` condition: the agent answered ``action_id``."""
    return lambda events: action_id in replies(events)


def replies(events: EventList) -> dict[str, list[str]]:
    """Agent message contents per action id they reply to (a turn's last message; the
    steps before it reply to nothing)."""
    out: dict[str, list[str]] = {}
    for event in events:
        in_reply_to = event["data"].get("in_reply_to")
        if event["source"] == "agent" and event["kind"] == "message" and in_reply_to:
            out.setdefault(in_reply_to, []).append(event["data"]["content"])
    return out


async def answered(redis: Redis, names: Names, cid: str, action_id: str) -> None:
    """Poll (with a deadline) until the agent answered ``action_id`` in the log."""
    async with asyncio.timeout(10):
        while True:
            log = [orjson.loads(raw) for raw in await redis.lrange(names.log(cid), 0, -1)]
            if action_id in replies(log):
                return
            await asyncio.sleep(0.05)


async def status_becomes(redis: Redis, names: Names, cid: str, status: str) -> None:
    """Poll (with a deadline) until the conversation's record has ``status``; if it
    never does, fail with the record and its last events, to show where it stopped."""
    try:
        async with asyncio.timeout(10):
            while (await redis.hget(names.meta(cid), "status")) != status.encode():
                await asyncio.sleep(0.05)
    except TimeoutError:
        record = await redis.hgetall(names.meta(cid))
        last = [Event.from_json(raw).kind for raw in await redis.lrange(names.log(cid), -5, -1)]
        raise AssertionError(
            f"{cid} is not {status} after 10 s: record {record}, last events {last}"
        ) from None


async def archived_becomes(redis: Redis, names: Names, cid: str, count: int) -> None:
    """Poll (with a deadline) until the conversation's first ``count`` events moved to
    PostgreSQL and Redis holds none of them."""
    async with asyncio.timeout(15):
        while (await redis.hget(names.meta(cid), "archived")) != str(count).encode():
            await asyncio.sleep(0.05)


async def say(
    base_url: str, bearer: str, cid: str, content: str, action_id: str | None = None
) -> None:
    """Send a message over HTTP (its action id is its content unless given)."""
    async with http(base_url, bearer) as api:
        body = {"kind": "message", "data": {"content": content}, "action_id": action_id or content}
        response = await api.post(f"/api/conversations/{cid}/actions", json=body)
        assert response.status_code == 200, response.text


async def owned(redis: Redis | RedisCluster, names: Names, worker_id: str) -> set[str]:
    """The conversations a worker owns, in all key groups."""
    return set(await Leases(redis, names).owned_by(worker_id))


async def owned_becomes(
    redis: Redis | RedisCluster, names: Names, worker_id: str, cids: set[str]
) -> None:
    """Wait until the worker owns exactly ``cids``."""
    async with asyncio.timeout(10):
        while await owned(redis, names, worker_id) != cids:
            await asyncio.sleep(0.02)
