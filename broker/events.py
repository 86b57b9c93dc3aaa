"""The event model and every wire format, each encoded and decoded side by side (orjson).

A logged event is stored as the JSON the client receives. The worker encodes
everything but the id; the append script, which alone knows the next id,
prepends ``{"id":N,`` (see ``body`` and ``with_id``). Broker messages: what goes
into a conversation's queue (``encode_input``/``decode_input``: actions, timers that
fired, the close marker, owner queries) and the answers to queries, claim requests,
batches of logged events for live delivery, and webhooks (the outbox's messages and
the body POSTed to receivers).
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
ActionKind = Literal["message", "stop", "approval"]
ACTION_KINDS: tuple[ActionKind, ...] = ("message", "stop", "approval")
MAX_ID_FIELD = 256  # characters of a request id or a choice


@dataclass(frozen=True, slots=True)
class Action:
    """A client's ``user_action``: a ``message`` (its ``content``), a ``stop`` of the
    running turn, or an ``approval`` (the ``choice`` answering ``request_id``)."""

    action_id: str
    kind: ActionKind
    content: str = ""
    request_id: str = ""
    choice: str = ""
    # When a gateway published it (epoch seconds; 0: unknown), for the action latency.
    sent_at: float = field(default=0.0, compare=False)

    @classmethod
    def parse(cls, payload: object) -> Action:
        """Validate a client payload; raise ``BadRequest`` saying what is wrong."""
        if not isinstance(payload, dict):
            raise BadRequest("user_action must be an object")
        kind = payload.get("kind")
        if kind not in ACTION_KINDS:
            raise BadRequest("user_action.kind must be one of 'message', 'stop', 'approval'")
        data = payload.get("data")
        fields = {}
        if kind == "message":
            fields["content"] = _text_field(data, "content")
        elif kind == "approval":
            fields["request_id"] = _text_field(data, "request_id", MAX_ID_FIELD)
            fields["choice"] = _text_field(data, "choice", MAX_ID_FIELD)
        action_id = payload.get("action_id")
        if action_id is None:
            action_id = uuid.uuid4().hex
        elif not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id):
            raise BadRequest("user_action.action_id must match " + ACTION_ID.pattern)
        return cls(
            action_id=action_id,
            kind=kind,
            content=fields.get("content", ""),
            request_id=fields.get("request_id", ""),
            choice=fields.get("choice", ""),
        )

    def digest(self) -> str:
        """What the action says (not its id): an id is admitted with one content only."""
        said = [self.kind, self.content]
        if self.kind == "approval":
            said = [self.kind, self.request_id, self.choice]
        return hashlib.blake2b(orjson.dumps(said), digest_size=16).hexdigest()

    def event(self, **extra: Any) -> NewEvent:
        """The user event this action logs: a ``message`` (``extra`` adds to its data, as
        ``steered_into``), a ``stop`` or an ``approval``."""
        if self.kind == "stop":
            return NewEvent("user", "stop", {"action_id": self.action_id})
        if self.kind == "approval":
            data = {"request_id": self.request_id, "choice": self.choice}
            return NewEvent("user", "approval", {**data, "action_id": self.action_id})
        data = {"content": self.content, "action_id": self.action_id, **extra}
        return NewEvent("user", "message", data)


def _text_field(data: object, name: str, max_chars: int | None = None) -> str:
    """``data[name]``, a string of valid text (and at most ``max_chars``, non-empty)."""
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, str):
        raise BadRequest(f"user_action.data.{name} must be a string")
    if not _is_utf8(value):
        raise BadRequest(f"user_action.data.{name} must be valid Unicode text")
    if max_chars is not None and not 0 < len(value) <= max_chars:
        raise BadRequest(f"user_action.data.{name} must have 1 to {max_chars} characters")
    return value


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


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer of the conversation's agent, due: its owner logs it once, as a ``timer``
    event that starts a turn of its own."""

    timer_id: str
    payload: Any
    at: float  # when it was due (epoch seconds)

    def event(self) -> NewEvent:
        data = {"timer_id": self.timer_id, "payload": self.payload, "at": self.at}
        return NewEvent("system", "timer", data)


# --- owner queries: a completion asked of a conversation's owner, never logged -------
ChatRole = Literal["system", "user", "assistant"]
CHAT_ROLES: tuple[ChatRole, ...] = ("system", "user", "assistant")
MAX_QUERY_MESSAGES = 256


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a completion request, as Chat Completions has it."""

    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True)
class Query:
    """A completion of ``messages`` by the conversation's owner, with the conversation's
    LLM settings: a question, not a turn (nothing is logged). Its asker waits
    ``timeout`` seconds for the answer, on the AMQP reply-to of its message."""

    messages: tuple[ChatMessage, ...]
    timeout: float

    @classmethod
    def parse(cls, payload: object, timeout: float) -> Query:
        """Validate a client's body; raise ``BadRequest`` naming the field at fault."""
        if not isinstance(payload, dict):
            raise BadRequest("body must be an object")
        raw = payload.get("messages")
        if not isinstance(raw, list) or not raw:
            raise BadRequest("messages must be a non-empty list")
        if len(raw) > MAX_QUERY_MESSAGES:
            raise BadRequest(f"messages must hold at most {MAX_QUERY_MESSAGES} messages")
        return cls(tuple(_chat_message(i, m) for i, m in enumerate(raw)), timeout)


def _chat_message(index: int, raw: object) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with role and content")
    if extra := sorted(set(raw) - {"role", "content"}):
        raise BadRequest(f"{where} has unknown fields: {', '.join(extra)}")
    role = raw.get("role")
    if role not in CHAT_ROLES:
        raise BadRequest(f"{where}.role must be one of " + ", ".join(CHAT_ROLES))
    content = raw.get("content")
    if not isinstance(content, str):
        raise BadRequest(f"{where}.content must be a string")
    if not _is_utf8(content):
        raise BadRequest(f"{where}.content must be valid Unicode text")
    return ChatMessage(role, content)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """The owner's answer to a ``Query``: its ``content``, or an error ``code`` (an LLM
    error's, ``not_supported``, ``unavailable``, ...) and ``message``."""

    content: str = ""
    code: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.code


def encode_answer(answer: QueryAnswer) -> bytes:
    if answer.ok:
        return orjson.dumps({"ok": True, "content": answer.content})
    return orjson.dumps({"ok": False, "error": {"code": answer.code, "message": answer.message}})


def decode_answer(body: bytes) -> QueryAnswer:
    """What ``encode_answer`` wrote."""
    try:
        obj = orjson.loads(body)
        if obj["ok"] is True:
            return QueryAnswer(content=str(obj["content"]))
        error = obj["error"]
        return QueryAnswer(code=str(error["code"]), message=str(error["message"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"query answer of {len(body)} bytes: {exc!r}") from None


QueueItem = Action | CloseMarker | TimerFired | Query


class Malformed(ValueError):
    """A broker message that does not decode: rejected, never retried."""


def encode_input(item: QueueItem, sent_at: float = 0.0) -> bytes:
    """The body of a conversation-queue message (an action carries ``sent_at``, if given)."""
    if isinstance(item, CloseMarker):
        return orjson.dumps({"kind": "close", "reason": item.reason})
    if isinstance(item, TimerFired):
        return orjson.dumps(
            {"kind": "timer", "timer_id": item.timer_id, "payload": item.payload, "at": item.at}
        )
    if isinstance(item, Query):
        messages = [{"role": m.role, "content": m.content} for m in item.messages]
        return orjson.dumps({"kind": "query", "messages": messages, "timeout": item.timeout})
    data = (
        {"request_id": item.request_id, "choice": item.choice}
        if item.kind == "approval"
        else {"content": item.content}
    )
    body: dict[str, Any] = {"action_id": item.action_id, "kind": item.kind, "data": data}
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
        if kind == "timer":
            return TimerFired(str(obj["timer_id"]), obj["payload"], float(obj["at"]))
        if kind == "query":
            messages = tuple(ChatMessage(m["role"], str(m["content"])) for m in obj["messages"])
            return Query(messages, float(obj["timeout"]))
        if kind not in ACTION_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        data = obj["data"]
        sent_at = float(obj.get("sent_at", 0.0))
        if kind == "approval":
            return Action(
                str(obj["action_id"]),
                kind,
                request_id=str(data["request_id"]),
                choice=str(data["choice"]),
                sent_at=sent_at,
            )
        return Action(str(obj["action_id"]), kind, str(data["content"]), sent_at=sent_at)
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"conversation input of {len(body)} bytes: {exc!r}") from None


def input_id(cid: str, item: Action | CloseMarker | TimerFired) -> str:
    """The broker message id of a queued item (a query goes by its correlation id)."""
    if isinstance(item, CloseMarker):
        return f"close:{cid}"
    return item.timer_id if isinstance(item, TimerFired) else item.action_id


def turn_id_of(message: Event) -> str:
    """The id of the turn an event starts: a user message's action id, a timer's id."""
    return str(message.data["timer_id" if message.kind == "timer" else "action_id"])


# --- claim requests (the dispatch queue) -------------------------------------------
# Why a conversation is owed an owner: input for it (or a passivated one's requeued
# input), its owner died, its owner handed it over (drain, a failed loop), the reaper
# asks again, or it is closing. ("rejoin", from workers that re-dispatched what they
# held when fenced, is still read: a rolling upgrade may have such requests queued.)
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


# --- webhooks: the webhook outbox's messages, and the body POSTed to receivers ------
# Where a delivery goes: FLEET_WEBHOOK_URL, or the conversation's callback_url.
WebhookTarget = Literal["fleet", "callback"]
WEBHOOK_TARGETS: tuple[WebhookTarget, ...] = ("fleet", "callback")


@dataclass(frozen=True, slots=True)
class Webhook:
    """One logged state change owed to one target: a message of the webhook outbox."""

    conversation_id: str
    user: str
    target: WebhookTarget
    url: str
    event_id: int
    event: bytes  # the event's JSON exactly as logged, which is what clients see
    queued_at: float  # epoch seconds; retried until FLEET_WEBHOOK_RETRY_FOR after it

    @property
    def delivery_id(self) -> str:
        """The same for every retry and every copy queued again: receivers dedupe by it."""
        return f"{self.conversation_id}:{self.event_id}:{self.target}"

    def body(self) -> bytes:
        """What is POSTed (and signed): the event embedded byte for byte."""
        return orjson.dumps(
            {
                "delivery_id": self.delivery_id,
                "conversation_id": self.conversation_id,
                "user": self.user,
                "event": orjson.Fragment(self.event),
            }
        )


def encode_webhook(webhook: Webhook) -> bytes:
    """A webhook outbox message (the event as a string, so that it decodes byte for byte)."""
    return orjson.dumps(
        {
            "conversation_id": webhook.conversation_id,
            "user": webhook.user,
            "target": webhook.target,
            "url": webhook.url,
            "event_id": webhook.event_id,
            "event": webhook.event.decode(),
            "queued_at": webhook.queued_at,
        }
    )


def decode_webhook(body: bytes) -> Webhook:
    """What ``encode_webhook`` wrote."""
    try:
        obj = orjson.loads(body)
        target = obj["target"]
        if target not in WEBHOOK_TARGETS:
            raise ValueError(f"unknown target {target!r}")
        return Webhook(
            conversation_id=str(obj["conversation_id"]),
            user=str(obj["user"]),
            target=target,
            url=str(obj["url"]),
            event_id=int(obj["event_id"]),
            event=str(obj["event"]).encode(),
            queued_at=float(obj["queued_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Malformed(f"webhook of {len(body)} bytes: {exc!r}") from None


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


# --- the client's side of the protocol (the SDK, fleet/client) ------------------------
def client_event(obj: Mapping[str, Any]) -> Event:
    """A Socket.IO ``event`` as received (fields beyond the protocol's are ignored)."""
    return Event(
        obj["id"], obj["conversation_id"], obj["source"], obj["kind"], obj["data"], obj["ts"]
    )


def client_frame(obj: Mapping[str, Any]) -> StreamFrame:
    """A Socket.IO ``stream`` frame as received."""
    return StreamFrame(
        obj["conversation_id"],
        obj["turn_id"],
        obj["epoch"],
        obj["step"],
        obj["seq"],
        obj["delta"],
        obj.get("ts", 0.0),
    )


def client_action(
    kind: str, action_id: str, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``user_action`` payload: ``message`` (data ``{"content"}``), ``stop``, or
    ``approval`` (data ``{"request_id", "choice"}``)."""
    payload: dict[str, Any] = {"kind": kind, "action_id": action_id}
    if data is not None:
        payload["data"] = dict(data)
    return payload


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an action or a connection was refused: the protocol's ``{code, message}``."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a ``user_action``: queued (``ok``) or refused, with ``error``."""

    action_id: str
    error: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_wire(self) -> dict[str, Any]:
        if self.error is None:
            return {"ok": True, "action_id": self.action_id}
        return {"ok": False, "error": {"code": self.error.code, "message": self.error.message}}

    @classmethod
    def from_wire(cls, obj: object, action_id: str) -> Ack:
        """What ``to_wire`` wrote, for the action sent as ``action_id`` (a refusal does
        not repeat it)."""
        if isinstance(obj, dict) and obj.get("ok") is True:
            return cls(str(obj.get("action_id", action_id)))
        error = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(error, dict):
            return cls(action_id, Refusal(str(error.get("code")), str(error.get("message"))))
        return cls(action_id, Refusal("bad_response", f"not an acknowledgement: {obj!r}"[:200]))
