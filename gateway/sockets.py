"""The Socket.IO edge: connect with a token and a conversation, ``user_action``, live events."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

import engineio.json
import orjson
import socketio
import structlog

from broker import metrics
from broker.errors import BadRequest, FleetError, TooManyConnections, Unavailable
from broker.presence import Presence
from broker.tokens import Verifier
from gateway.feed import Feed
from gateway.operations import Operations
from gateway.outbox import Outbox

log = structlog.get_logger()

# Event ids beyond this are no log's (and would overflow Redis's 64-bit indexes).
MAX_EVENT_ID = 2**62
INTEGER = re.compile(r"-?[0-9]{1,20}")


def connect_params(environ: dict[str, Any], auth: object) -> dict[str, Any]:
    """The auth object, or the query parameters of the same names when it is absent."""
    if isinstance(auth, dict) and auth:
        return auth
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return {k: query[k][0] for k in ("token", "conversation_id", "latest_event_id") if k in query}


def parse_latest_event_id(value: object) -> int:
    if value is None:
        return -1
    if isinstance(value, str) and INTEGER.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value <= MAX_EVENT_ID:
        raise BadRequest(f"latest_event_id must be an integer from -1 to {MAX_EVENT_ID}")
    return value


class PacketJson:
    """The JSON module of python-socketio's packets: orjson's encoder (every event sent
    to a client goes through it), engineio's decoder (its limits on what clients send)."""

    loads = staticmethod(engineio.json.loads)

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # what only the standard encoder takes (integers past 64 bits)
            return json.dumps(obj, separators=(",", ":"))


class FleetPacket(socketio.packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, without its search of every event sent for bytes to
    send as attachments (1.6 % of a gateway's time): the fleet sends JSON only. What
    clients send is decoded as before, attachments included."""

    uses_binary_events = False


class FleetServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, refusing what no client may send: a malformed packet
    (said once, then the connection is closed) and an ordinary event named like a
    session event (``connect``, ``disconnect``), which would run the session's
    handlers again with a client-chosen environ."""

    async def emit_to(self, sid: str, event: str, data: Any) -> None:
        """``emit(event, data, to=sid)`` in the default namespace, without the task
        python-socketio makes for each recipient and waits for. That wait cost every
        event a turn of the loop, so the events of one batch left in a write each; sent
        here, the events of one turn leave in one write (``CoalescedWebSocket``)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return  # gone: as ``emit`` to it, nothing to do
        packet = self.packet_class(socketio.packet.EVENT, namespace="/", data=[event, data])
        await self._send_packet(eio_sid, packet)  # as the server sends acks

    async def _handle_eio_message(self, eio_sid: str, data: object) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            await self._refuse(eio_sid, "packet_malformed", f"{type(exc).__name__}: {exc}"[:120])

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]
    ) -> None:
        if not data or not isinstance(data[0], str) or data[0] in self.reserved_events:
            name = data[0] if data and isinstance(data[0], str) else None
            log.info("event_refused", name=name, reason="reserved or missing event name")
            return
        await super()._handle_event(eio_sid, namespace, id, data)

    async def _refuse(self, eio_sid: str, event: str, error: str) -> None:
        """Say why once, and close the connection (later packets find it closing)."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closing or socket.closed:
            return
        log.info(event, eio_sid=eio_sid, error=error)
        await self.eio.disconnect(eio_sid)


class FleetNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The default namespace of the client protocol."""

    def __init__(
        self,
        operations: Operations,
        feed: Feed,
        verifier: Verifier,
        presence: Presence,
        outbox: Outbox,
    ) -> None:
        super().__init__("/")
        self._operations = operations
        self._feed = feed
        self._verifier = verifier
        self._presence = presence
        self._outbox = outbox
        self._sessions: dict[str, tuple[str, str]] = {}  # sid -> (user, conversation id)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        params = connect_params(environ, auth)
        try:
            user = (await self._verifier.verify(params.get("token"))).user
            cid = await self._operations.authorize(user, params.get("conversation_id"))
            after = parse_latest_event_id(params.get("latest_event_id"))
            if not await self._presence.joined(cid, user):
                raise TooManyConnections(
                    f"you already have {self._presence.limit} connections; close one first"
                )
        except FleetError as exc:
            log.info("connect_refused", code=exc.code, reason=exc.message)
            metrics.REFUSALS.labels(exc.code).inc()
            # Clients see ``message``, and ``data`` = {code, message} (JS: err.message, err.data).
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.as_dict()) from None
        self._sessions[sid] = (user, cid)
        metrics.CONNECTED_CLIENTS.inc()
        await self._feed.join(sid, cid, after)
        log.debug("client_connected", conversation_id=cid, sid=sid)

    async def on_disconnect(self, sid: str, *reason: object) -> None:
        self._outbox.wake(sid)
        session = self._sessions.pop(sid, None)
        await self._feed.leave(sid)
        if session is not None:
            metrics.CONNECTED_CLIENTS.dec()
            user, cid = session
            try:
                await self._presence.left(cid, user)
            except Exception as exc:  # recounted when the gateway's liveness lapses
                log.warning("presence_not_updated", conversation_id=cid, error=repr(exc))

    def sessions(self) -> list[tuple[str, str]]:
        """``(user, conversation id)`` of every connected client (with repeats)."""
        return list(self._sessions.values())

    async def on_user_action(
        self, sid: str, payload: object = None, *extra: object
    ) -> dict[str, Any]:
        user, cid = self._sessions.get(sid, (None, None))
        try:
            if user is None or cid is None:
                raise BadRequest("not connected to a conversation")
            if extra:
                raise BadRequest("user_action takes one argument, the action")
            action_id = await self._operations.act(user, cid, payload)
        except FleetError as exc:
            log.info("action_refused", conversation_id=cid, code=exc.code, reason=exc.message)
            metrics.REFUSALS.labels(exc.code).inc()
            return {"ok": False, "error": exc.as_dict()}
        except Exception:
            log.exception("action_failed", conversation_id=cid)
            metrics.REFUSALS.labels(Unavailable.code).inc()
            return {"ok": False, "error": Unavailable("action not queued; retry").as_dict()}
        return {"ok": True, "action_id": action_id}
