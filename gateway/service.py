"""What clients may do with conversations, shared by the Socket.IO and HTTP edges."""

from __future__ import annotations

import asyncio

import structlog

from broker.amqp import Broker
from broker.errors import NotFound, PayloadTooLarge, Unavailable
from broker.events import Action
from broker.leases import Leases
from broker.names import valid_conversation_id
from broker.store import Conversation, Store

MAX_PAGE = 1000

log = structlog.get_logger()


class Conversations:
    """Create, authorise, act on and read conversations on behalf of one user at a time."""

    def __init__(self, store: Store, leases: Leases, broker: Broker, max_payload: int) -> None:
        self.store = store
        self.leases = leases
        self.broker = broker
        self.max_payload = max_payload

    async def create(self, user: str, initial_message: str | None = None) -> str:
        cid = await self.store.create(user)
        await self.broker.declare_conversation(cid)
        if initial_message is not None:
            action = Action.parse({"kind": "message", "data": {"content": initial_message}})
            await self._publish(cid, action)
        await self.broker.request_claim(cid)
        return cid

    async def authorize(self, user: str, cid: object) -> str:
        """The conversation id, if it names one of ``user``'s; else ``NotFound``.

        Another user's conversation is "not found" too: a 403 would reveal it exists.
        """
        if not valid_conversation_id(cid) or await self.store.owner_of(cid) != user:  # type: ignore[arg-type]
            raise NotFound("no such conversation")
        return cid  # type: ignore[return-value]

    async def get(self, user: str, cid: str) -> Conversation:
        record = await self.store.get(await self.authorize(user, cid))
        if record is None:
            raise NotFound("no such conversation")
        return record

    async def act(self, cid: str, payload: object) -> str:
        """Queue a client action (already authorised); its action id once confirmed."""
        action = Action.parse(payload)
        await self._publish(cid, action)
        return action.action_id

    async def _publish(self, cid: str, action: Action) -> None:
        body = action.to_json()
        if len(body) > self.max_payload:
            raise PayloadTooLarge(f"action is {len(body)} bytes; the limit is {self.max_payload}")
        # Lazy recovery: if nobody live owns the conversation, ask for a claim. The
        # check runs beside the publish, so it costs no latency; it is best effort
        # (the reaper recovers too), so its failure does not fail the action.
        published, orphaned = await asyncio.gather(
            self.broker.publish_action(cid, body, action.action_id),
            self.leases.needs_owner(cid),
            return_exceptions=True,
        )
        if isinstance(published, BaseException):
            raise published
        if orphaned is True:
            await self._request_claim(cid)
        elif isinstance(orphaned, BaseException):
            log.warning("owner_check_failed", conversation_id=cid, error=repr(orphaned))

    async def _request_claim(self, cid: str) -> None:
        try:
            await self.broker.request_claim(cid)
        except Unavailable as exc:
            log.warning("claim_request_failed", conversation_id=cid, error=repr(exc))

    async def list_page(self, user: str, after: str | None, limit: int) -> list[Conversation]:
        ids = await self.store.list_ids(user, after, min(limit, MAX_PAGE))
        records = await asyncio.gather(*(self.store.get(cid) for cid in ids))
        return [r for r in records if r is not None]

    async def events(self, user: str, cid: str, after: int, limit: int) -> list[bytes]:
        return await self.store.read(await self.authorize(user, cid), after, min(limit, MAX_PAGE))
