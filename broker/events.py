"""The event model and every wire format, each encoded and decoded side by side (orjson).

A logged event is stored as the JSON the client receives. The worker encodes
everything but the id; the append script, which alone knows the next id,
prepends ``{"id":N,`` (see ``body`` and ``with_id``). Broker messages: what goes
into a conversation's queue (``encode_input``/``decode_input``), claim requests,
and batches of logged events for live delivery.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from broker.errors import BadRequest
from broker.names import valid_conversation_id

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

    def logged(self, event_id: int, conversation_id: str) -> Event:
        """This event as logged with ``event_id``."""
        return Event(event_id, conversation_id, self.source, self.kind, self.data, self.ts)

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


def state(value: str, **data: Any) -> NewEvent:
    """An agent ``state`` event (``running`` also names its ``turn_id``)."""
    return NewEvent("agent", "state", {"state": value, **data})


# --- what travels through a conversation's queue ------------------------------------
ActionKind = Literal["message", "stop"]
ACTION_KINDS: tuple[ActionKind, ...] = ("message", "stop")


@dataclass(frozen=True, slots=True)
class Action:
    """A client's ``user_action``: a ``message`` (its ``content``), or a ``stop`` of the
    running turn."""

    action_id: str
    kind: ActionKind
    content: str = ""
    # When a gateway published it (epoch seconds; 0: unknown), for the action latency.
    sent_at: float = field(default=0.0, compare=False)

    @classmethod
    def parse(cls, payload: object) -> Action:
        """Validate a client payload; raise ``BadRequest`` saying what is wrong."""
        if not isinstance(payload, dict):
            raise BadRequest("user_action must be an object")
        kind = payload.get("kind")
        if kind not in ACTION_KINDS:
            raise BadRequest("user_action.kind must be one of 'message', 'stop'")
        content = ""
        if kind == "message":
            data = payload.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("content"), str):
                raise BadRequest("user_action.data.content must be a string")
            if not _is_utf8(data["content"]):
                raise BadRequest("user_action.data.content must be valid Unicode text")
            content = data["content"]
        action_id = payload.get("action_id")
        if action_id is None:
            action_id = uuid.uuid4().hex
        elif not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id):
            raise BadRequest("user_action.action_id must match " + ACTION_ID.pattern)
        return cls(action_id=action_id, kind=kind, content=content)

    def digest(self) -> str:
        """What the action says (not its id): an id is admitted with one content only."""
        return hashlib.blake2b(orjson.dumps([self.kind, self.content]), digest_size=16).hexdigest()

    def event(self, **extra: Any) -> NewEvent:
        """The user event this action logs: a ``message`` (``extra`` adds to its data, as
        ``steered_into``), or a ``stop``."""
        if self.kind == "stop":
            return NewEvent("user", "stop", {"action_id": self.action_id})
        data = {"content": self.content, "action_id": self.action_id, **extra}
        return NewEvent("user", "message", data)


def _is_utf8(text: str) -> bool:
    """False for a string with a lone surrogate: no JSON encoder can send it on."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class CloseMarker:
    """Queued behind the input already there: its owner logs ``closed`` and finishes."""

    reason: str


QueueItem = Action | CloseMarker


class Malformed(ValueError):
    """A broker message that does not decode: rejected, never retried."""


def encode_input(item: QueueItem, sent_at: float = 0.0) -> bytes:
    """The body of a conversation-queue message (an action carries ``sent_at``, if given)."""
    if isinstance(item, CloseMarker):
        return orjson.dumps({"kind": "close", "reason": item.reason})
    body: dict[str, Any] = {
        "action_id": item.action_id,
        "kind": item.kind,
        "data": {"content": item.content},
    }
    if sent_at:
        body["sent_at"] = sent_at
    return orjson.dumps(body)


def decode_input(body: bytes) -> QueueItem:
    """What ``encode_input`` wrote (trusted shape: the gateway validated it)."""
    try:
        obj = orjson.loads(body)
        kind = obj["kind"]
        if kind == "close":
            return CloseMarker(str(obj["reason"]))
        if kind not in ACTION_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        sent_at = float(obj.get("sent_at", 0.0))
        return Action(str(obj["action_id"]), kind, str(obj["data"]["content"]), sent_at)
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"conversation input of {len(body)} bytes: {exc!r}") from None


def input_id(cid: str, item: QueueItem) -> str:
    """The broker message id of a queued item."""
    return f"close:{cid}" if isinstance(item, CloseMarker) else item.action_id


# --- claim requests (the dispatch queue) -------------------------------------------
# Why a conversation is owed an owner: input for it (or a passivated one's requeued
# input), its owner died, its owner handed it over (drain, a failed loop), the reaper
# asks again, it is closing, or a worker that fenced itself gives back what it held.
ClaimCause = Literal["input", "failover", "handover", "retry", "close", "rejoin"]
CLAIM_CAUSES: tuple[ClaimCause, ...] = get_args(ClaimCause)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """Ask a worker with room to claim a conversation, owed an owner since ``since``
    (epoch seconds; 0: unknown)."""

    conversation_id: str
    cause: ClaimCause = "input"
    since: float = 0.0


def encode_claim_request(request: ClaimRequest) -> bytes:
    return orjson.dumps(
        {"conversation_id": request.conversation_id, "cause": request.cause, "since": request.since}
    )


def decode_claim_request(body: bytes) -> ClaimRequest:
    """What ``encode_claim_request`` wrote; an earlier version's names only the id."""
    try:
        obj = orjson.loads(body)
        cid, cause, since = obj["conversation_id"], obj.get("cause", "input"), obj.get("since", 0)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Malformed(f"claim request of {len(body)} bytes: {exc!r}") from None
    if not valid_conversation_id(cid):
        raise Malformed(f"claim request names no valid conversation: {cid!r}")
    if cause not in CLAIM_CAUSES or not isinstance(since, int | float):
        raise Malformed(f"claim request of {cid} has cause {cause!r} since {since!r}")
    return ClaimRequest(str(cid), cause, float(since))


# --- live messages (the outbound exchange): batches of logged events, stream frames --
@dataclass(frozen=True, slots=True)
class StreamFrame:
    """Live text of a turn's step being made: not logged; the client protocol's
    ``stream`` frame. ``seq`` counts from 0 per (turn, epoch, step)."""

    conversation_id: str
    turn_id: str
    epoch: int
    step: int
    seq: int
    delta: str
    ts: float = 0.0  # when its owner sent it (epoch seconds)

    def to_client(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "epoch": self.epoch,
            "step": self.step,
            "seq": self.seq,
            "delta": self.delta,
            "ts": self.ts,
        }


Batch = tuple[str, list[dict[str, Any]]]  # a conversation id and its logged events


def encode_batch(entries: Sequence[bytes]) -> bytes:
    """Logged events (their JSON as logged) as one JSON array: the broker's cost is per
    message, so one message carries every event a step logged."""
    return b"[" + b",".join(entries) + b"]"


def encode_frame(frame: StreamFrame) -> bytes:
    """A stream frame as one JSON object (a batch is an array)."""
    return orjson.dumps(frame.to_client())


def decode_live(body: bytes) -> Batch | StreamFrame:
    """What ``encode_batch`` or ``encode_frame`` wrote."""
    try:
        obj = orjson.loads(body)
        if isinstance(obj, list):
            return str(obj[0]["conversation_id"]), obj
        return StreamFrame(**obj)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise Malformed(f"live message of {len(body)} bytes: {exc!r}") from None


# --- what a process tells ops about itself (its liveness key's value) ---------------
@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Who a live process is, kept as the value of its liveness key so that it vanishes
    with it; ``fleet status`` shows it."""

    role: str
    process_id: str
    host: str
    pid: int
    started_at: float  # epoch seconds
    incarnation: int = 0  # workers: how many times it fenced itself and rejoined
    capacity: int | None = None  # workers: conversations it may run
    address: str | None = None  # gateways: host:port clients connect to
    metrics: str | None = None  # host:port of its Prometheus metrics, when served


def encode_process_info(info: ProcessInfo) -> bytes:
    return orjson.dumps(info, option=orjson.OPT_OMIT_MICROSECONDS)


def decode_process_info(raw: bytes | str | None) -> ProcessInfo | None:
    """What ``encode_process_info`` wrote; None for anything else (a process of an
    earlier version keeps ``1`` there)."""
    if raw is None:
        return None
    try:
        obj = orjson.loads(raw)
        return ProcessInfo(**obj) if isinstance(obj, dict) else None
    except (ValueError, TypeError):
        return None
