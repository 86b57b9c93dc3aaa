"""What a user may do with conversations, shared by the Socket.IO and HTTP edges."""

from __future__ import annotations

import asyncio
from typing import get_args

import structlog

from broker import metrics, tracing
from broker.amqp import Broker
from broker.errors import (
    AgentFailed,
    BadRequest,
    Busy,
    Conflict,
    ConversationClosed,
    FleetError,
    LogFull,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    TooManyConversations,
    Unavailable,
)
from broker.events import Action, Query, QueryAnswer, decode_answer, encode_input
from broker.names import valid_conversation_id
from broker.ratelimit import Rate, refuse
from broker.settings import BusyPolicy, Settings
from broker.store import Admission, ConversationRecord, Limits, Store
from broker.webhook_cursors import OUTBOXED
from broker.webhooks import check_callback_url

MAX_PAGE = 1000
CLOSED_BY_USER = "closed by user"

log = structlog.get_logger()

# An owner query's failure, by the code its owner answered: the HTTP status (LLM
# errors keep the code a failed turn logs; any other agent failure is a 502).
QUERY_FAILURES: dict[str, tuple[int, float | None]] = {
    "llm_rate_limited": (429, 1.0),
    "llm_timeout": (504, None),
    "context_too_long": (400, None),
}


def busy_policy(value: object) -> BusyPolicy:
    """A client's ``on_busy`` choice, checked."""
    for policy in get_args(BusyPolicy):
        if value == policy:
            return policy  # type: ignore[no-any-return]
    raise BadRequest("on_busy must be one of " + ", ".join(get_args(BusyPolicy)))


class Operations:
    """Create, authorise, act on, close and read conversations on behalf of a user."""

    def __init__(self, store: Store, broker: Broker, settings: Settings) -> None:
        self.store = store
        self.broker = broker
        self.max_payload = settings.max_payload_bytes
        self.limits = Limits(
            settings.max_conversations_per_user,
            settings.over_limit_policy,
            Rate(settings.rate_limit, settings.rate_burst),
            rate_bytes=settings.rate_bytes,
            log_events=settings.max_log_events,
            log_bytes=settings.max_log_bytes,
        )
        # A slot frees when a conversation is closed or passivates: say when, at most.
        self.slot_retry = settings.passivate_after
        self.on_busy: BusyPolicy = settings.on_busy
        self.publish_timeout = settings.publish_timeout
        self.completion_timeout = settings.completion_timeout
        self.webhooks_on = settings.webhook_signing_key is not None
        self.webhook_url = settings.webhook_url
        self.webhook_allow_private = settings.webhook_allow_private

    async def create(
        self,
        user: str,
        initial_message: str | None = None,
        on_busy: object = None,
        callback_url: object = None,
    ) -> str:
        """A new conversation, its queue declared before its record exists: a gateway
        that dies half way leaves at most an unused queue, never a record without one
        (the pending index brings it an owner, which passivates it when idle)."""
        initial, size = None, 0
        if initial_message is not None:
            initial, size = self._action({"kind": "message", "data": {"content": initial_message}})
        policy = self.on_busy if on_busy is None else busy_policy(on_busy)
        record = await self._webhooks(callback_url)
        cid = self.store.names.new_conversation_id(user)
        await self.broker.declare_conversation(cid)
        admission = await self.store.create(cid, user, self.limits, policy, size, record)
        if admission.outcome != "ok":
            await self.broker.delete_if_empty(cid)
        self._check(admission)
        if initial is not None:
            await self.broker.publish_input(cid, initial)
        await self._after_admission(cid, admission)
        return cid

    async def _webhooks(self, callback_url: object) -> dict[str, str]:
        """The record's webhook fields: the callback_url, checked; and, when the
        conversation has a webhook target, the relay's cursor before its first event."""
        record: dict[str, str] = {}
        if callback_url is not None:
            if not self.webhooks_on:
                raise BadRequest("callback_url cannot be used: this fleet sends no webhooks")
            record["callback_url"] = await check_callback_url(
                callback_url, self.webhook_allow_private
            )
        if record or (self.webhooks_on and self.webhook_url):
            record[OUTBOXED] = "-1"
        return record

    async def authorize(self, user: str, cid: object) -> str:
        """The conversation id, if it names one of ``user``'s; else ``NotFound``.

        Another user's conversation is "not found" too: a 403 would reveal it exists.
        """
        if not valid_conversation_id(cid) or await self.store.owner_of(cid) != user:  # type: ignore[arg-type]
            raise NotFound("no such conversation")
        return cid  # type: ignore[return-value]

    async def get(self, user: str, cid: str) -> ConversationRecord:
        record = await self.store.get(await self.authorize(user, cid))
        if record is None:
            raise NotFound("no such conversation")
        return record

    async def act(self, user: str, cid: str, payload: object) -> str:
        """Queue a client action (``cid`` already authorised); its id once confirmed."""
        metrics.ACTIONS_RECEIVED.inc()
        action, size = self._action(payload)
        attributes = {
            "fleet.conversation_id": cid,
            "fleet.action_id": action.action_id,
            "fleet.action_kind": action.kind,
        }
        with tracing.span("fleet.action", attributes, tracing.Kind.SERVER):
            admission = await self.store.admit(cid, user, self.limits, action, size)
            await self._admitted(cid, admission)
            with metrics.PUBLISH_CONFIRM_SECONDS.time():
                await self.broker.publish_input(cid, action)
        metrics.ACTIONS_ACKNOWLEDGED.inc()
        await self._after_admission(cid, admission)
        return action.action_id

    async def complete(self, user: str, cid: str, payload: object) -> str:
        """An owner query (``cid`` already authorised): the owner's completion of the
        payload's messages, with the conversation's LLM settings. Admitted like an
        action (rate, status, a slot), so a passivated conversation is claimed first."""
        query = Query.parse(payload, self.completion_timeout)
        size = len(encode_input(query))
        if size > self.max_payload:
            raise PayloadTooLarge(f"messages are {size} bytes; the limit is {self.max_payload}")
        admission = await self.store.admit_query(cid, user, self.limits, size)
        await self._admitted(cid, admission)
        async with self.broker.ask(cid, query) as reply:
            await self._after_admission(cid, admission)
            try:
                async with asyncio.timeout(query.timeout):
                    body = await reply
            except TimeoutError:
                raise Unavailable(
                    f"the conversation's owner did not answer within {query.timeout:g} s"
                ) from None
        return answered(decode_answer(body))

    async def close(self, user: str, cid: str) -> None:
        """Close for good: its owner logs ``closed`` after the input already queued."""
        before = await self.store.close(await self.authorize(user, cid), user, CLOSED_BY_USER)
        if before in ("running", "idle"):
            await self.broker.close_conversation(cid, CLOSED_BY_USER)

    def _action(self, payload: object) -> tuple[Action, int]:
        """The action, and its size on the wire."""
        action = Action.parse(payload)
        size = len(encode_input(action))
        if size > self.max_payload:
            raise PayloadTooLarge(f"action is {size} bytes; the limit is {self.max_payload}")
        return action, size

    async def _admitted(self, cid: str, admission: Admission) -> None:
        """Raise the error of an admission refused; once admitted, wait until a queue
        being deleted on passivation is gone (the input then declares it again)."""
        self._check(admission)
        if admission.settling:
            await self.store.settled(cid, self.publish_timeout)

    def _check(self, admission: Admission) -> None:
        if admission.outcome == "rate_limited":
            raise refuse(admission.retry_after_ms)
        if admission.outcome == "busy":
            raise Busy("the agent is busy with a turn; retry when it is done, or stop it")
        if admission.outcome == "conflict":
            raise Conflict("this action_id was already used for another action")
        if admission.outcome == "log_full":
            limits = self.limits
            raise LogFull(
                f"the conversation reached its limit of {limits.log_events} events or "
                f"{limits.log_bytes} bytes; start a new one"
            )
        if admission.outcome == "no_request":
            raise BadRequest("no open approval request has this request_id (unknown, or answered)")
        if admission.outcome == "bad_choice":
            raise BadRequest("user_action.data.choice must be one of the request's options")
        if admission.outcome == "over_limit":
            raise TooManyConversations(
                f"you already run {self.limits.conversations} conversations; "
                "close one or wait until one idles",
                retry_after=self.slot_retry,
            )
        if admission.outcome == "closed":
            raise ConversationClosed("the conversation is closed")
        if admission.outcome != "ok":
            raise NotFound("no such conversation")

    async def _after_admission(self, cid: str, admission: Admission) -> None:
        """Close what the admission evicted; ask for an owner if there is none live.

        Both are best effort once the action is queued: the reaper recovers owners
        too, so a failure here does not fail the action.
        """
        try:
            if admission.evicted is not None:
                reason = "evicted: too many conversations"
                await self.broker.close_conversation(admission.evicted, reason)
            if admission.needs_owner:
                await self.broker.request_claim(cid)
        except Unavailable as exc:
            log.warning("after_admission_failed", conversation_id=cid, error=repr(exc))

    async def list_page(self, user: str, after: str | None, limit: int) -> list[ConversationRecord]:
        ids = await self.store.list_ids(user, after, min(limit, MAX_PAGE))
        records = await asyncio.gather(*(self.store.get(cid) for cid in ids))
        return [r for r in records if r is not None]

    async def events(self, user: str, cid: str, after: int, limit: int) -> list[bytes]:
        return await self.store.read(await self.authorize(user, cid), after, min(limit, MAX_PAGE))


def answered(answer: QueryAnswer) -> str:
    """The content of an owner's answer, or its failure as the error the client gets."""
    if answer.ok:
        return answer.content
    failure: FleetError
    if answer.code == "not_supported":
        failure = NotSupported(answer.message)
    elif answer.code == "unavailable":
        failure = Unavailable(answer.message)
    elif answer.code == "conversation_closed":
        failure = ConversationClosed(answer.message)
    else:
        status, retry_after = QUERY_FAILURES.get(answer.code, (502, None))
        failure = AgentFailed(answer.code, answer.message, status, retry_after)
    raise failure
