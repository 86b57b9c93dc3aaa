"""The event model and its one codec (orjson).

A logged event is stored as the JSON the client receives. The worker encodes
everything but the id; the append script, which alone knows the next id,
prepends ``{"id":N,`` (see ``body`` and ``with_id``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from broker.errors import BadRequest

Source = Literal["user", "agent", "system"]
ACTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Event:
    """One logged event, as clients see it."""

    id: int
    conversation_id: str
    source: Source
    kind: str
    data: Mapping[str, Any]
    ts: float

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event not logged yet: the log assigns its id."""

    source: Source
    kind: str
    data: Mapping[str, Any]
    ts: float = field(default_factory=time.time)

    def body(self, conversation_id: str) -> bytes:
        """The event's JSON without its opening brace and id (see ``with_id``)."""
        encoded = orjson.dumps(
            {
                "conversation_id": conversation_id,
                "source": self.source,
                "kind": self.kind,
                "data": self.data,
                "ts": self.ts,
            }
        )
        return encoded[1:]


def with_id(event_id: int, body: bytes) -> bytes:
    """The logged JSON of an event: what the append script stores, byte for byte."""
    return b'{"id":%d,%s' % (event_id, body)


def state(value: str) -> NewEvent:
    """An agent ``state`` event."""
    return NewEvent("agent", "state", {"state": value})


@dataclass(frozen=True, slots=True)
class Action:
    """A client's ``user_action``, as it travels through the conversation's queue."""

    action_id: str
    kind: str
    content: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"action_id": self.action_id, "kind": self.kind, "data": {"content": self.content}}
        )

    @classmethod
    def parse(cls, payload: object) -> Action:
        """Validate a client payload; raise ``BadRequest`` saying what is wrong."""
        if not isinstance(payload, dict):
            raise BadRequest("user_action must be an object")
        kind = payload.get("kind")
        if kind != "message":
            raise BadRequest("user_action.kind must be 'message'")
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise BadRequest("user_action.data.content must be a string")
        action_id = payload.get("action_id")
        if action_id is None:
            action_id = uuid.uuid4().hex
        elif not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id):
            raise BadRequest("user_action.action_id must match " + ACTION_ID.pattern)
        return cls(action_id=action_id, kind=kind, content=data["content"])

    @classmethod
    def from_payload(cls, obj: dict[str, Any]) -> Action:
        """Rebuild what ``to_json`` wrote (trusted: the gateway validated it)."""
        return cls(action_id=obj["action_id"], kind=obj["kind"], content=obj["data"]["content"])

    def event(self) -> NewEvent:
        """The user ``message`` event this action logs."""
        return NewEvent("user", "message", {"content": self.content, "action_id": self.action_id})
