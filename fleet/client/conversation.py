"""``Conversation``: one conversation, live, through any of a fleet's gateways.

It keeps one Socket.IO connection and, when that connection ends (a gateway dies,
drains, or finds the client too slow), opens another to the next gateway with the
last event id seen: the gateway replays what was missed, events already delivered
are dropped by id, and streamed text goes on where it was (``StreamedText``). Actions
carry an id chosen here, so one sent again after a lost connection is queued and
answered once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import socketio
import structlog

from broker.backoff import Backoff
from broker.events import Ack, Event, StreamFrame, client_action
from fleet.client.link import TRANSIENT, ConnectionRefused, Link, LinkLost
from fleet.client.text import StreamedText, TextUpdate

log = structlog.get_logger()

Update = Event | TextUpdate
ANSWERS_REMEMBERED = 1024  # turn endings kept for ``reply_to`` calls made after them


class Unreachable(ConnectionError):
    """No gateway could be reached."""


class ClientClosed(Exception):
    """The conversation was closed on this side (``close``)."""


class ActionRefused(Exception):
    """``ask``: the message was not queued (``ack.error`` says why)."""

    def __init__(self, ack: Ack) -> None:
        assert ack.error is not None
        super().__init__(f"{ack.error.code}: {ack.error.message}")
        self.ack = ack


class _End:
    """Queued after the last update."""


def ended_turns(event: Event) -> list[str]:
    """The action ids whose turn ``event`` ends: the answer (and what was steered into
    its turn), an abort, a failure, or a message answered by its conversation closing."""
    data = event.data
    if event.source == "system" and event.kind == "error" and "action_id" in data:
        return [data["action_id"]]
    turn_id = data.get("turn_id")
    if event.source != "agent" or not isinstance(turn_id, str):
        return []
    if "in_reply_to" in data:
        return [data["in_reply_to"], *data.get("steered", [])]
    return [turn_id] if event.kind in ("turn_aborted", "error") else []


class Conversation:
    """A live conversation: ``async for update in conversation`` yields each logged
    ``Event`` (the history after ``latest_event_id`` first, then live, each once, in
    order) and each ``TextUpdate`` of the text being streamed; ``send``, ``stop`` and
    ``answer_approval`` return the ``Ack``; ``reply_to`` waits for a turn's end.

    ``urls`` are gateways of one fleet (a load balancer's URL, or several gateways
    to go round): a lost connection is replaced by one to the next that answers.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: str,
        conversation_id: str,
        *,
        latest_event_id: int = -1,
        transports: Sequence[str] = ("websocket",),
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one gateway URL is needed")
        self.token = token
        self.conversation_id = conversation_id
        self.latest_event_id = latest_event_id
        self.connections = 0  # connections opened so far (more than 1: it reconnected)
        self._transports = list(transports)
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._text = StreamedText()
        self._updates: asyncio.Queue[Update | _End] = asyncio.Queue()
        self._answers: OrderedDict[str, Event] = OrderedDict()
        self._waiting: dict[str, list[asyncio.Future[Event]]] = {}
        self._link: Link | None = None
        self._next_link: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def connect(self) -> Conversation:
        """Open the first connection (each URL once, in order); ``ConnectionRefused``
        if a gateway refuses (a bad token, not your conversation), ``Unreachable``."""
        self._next_link = asyncio.get_running_loop().create_future()
        link = await self._open_any(start=0, rounds=1)
        self._use(link)
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def close(self) -> None:
        """Disconnect; iterating ends, pending calls raise ``ClientClosed``."""
        if self._failure is None:
            self._fail(ClientClosed("closed"))
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._link is not None:
            await self._link.close()

    async def __aenter__(self) -> Conversation:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str | None:
        """The gateway connected to now (None between connections)."""
        link = self._link
        return link.url if link is not None and not link.gone.is_set() else None

    # --- what arrives -----------------------------------------------------------------
    def __aiter__(self) -> Conversation:
        return self

    async def __anext__(self) -> Update:
        item = await self._updates.get()
        if isinstance(item, _End):
            self._updates.put_nowait(item)  # every later iteration ends too
            if isinstance(self._failure, ClientClosed):
                raise StopAsyncIteration
            assert self._failure is not None
            raise self._failure
        return item

    def text(self, turn_id: str, step: int = 0) -> str:
        """The text streamed so far of a turn's step that is not logged yet."""
        return self._text.text(turn_id, step)

    async def reply_to(self, action_id: str, timeout: float | None = None) -> Event:
        """The event that ends the turn of a message: the agent's answer, or
        ``turn_aborted``, or an ``error`` (a failed turn, a closed conversation)."""
        if action_id in self._answers:
            return self._answers[action_id]
        if self._failure is not None:
            raise self._failure
        waiter: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(action_id, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            waiters = self._waiting.get(action_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(action_id, None)

    # --- what is sent -----------------------------------------------------------------
    async def send(self, content: str, *, action_id: str | None = None, timeout: float = 30) -> Ack:
        """Send a message; its ``Ack`` once the fleet queued it (or refused it)."""
        data = {"content": content}
        return await self._act(client_action("message", action_id or _new_id(), data), timeout)

    async def stop(self, *, action_id: str | None = None, timeout: float = 30) -> Ack:
        """Stop the turn running now (if any)."""
        return await self._act(client_action("stop", action_id or _new_id()), timeout)

    async def answer_approval(
        self, request_id: str, choice: str, *, action_id: str | None = None, timeout: float = 30
    ) -> Ack:
        """Answer an ``approval_request`` event with one of its ``options``."""
        data = {"request_id": request_id, "choice": choice}
        return await self._act(client_action("approval", action_id or _new_id(), data), timeout)

    async def ask(self, content: str, timeout: float | None = None) -> Event:
        """Send a message and wait for the end of its turn (see ``reply_to``)."""
        ack = await self.send(content)
        if ack.error is not None:
            raise ActionRefused(ack)
        return await self.reply_to(ack.action_id, timeout)

    async def _act(self, payload: dict[str, Any], timeout: float) -> Ack:
        """Send until acknowledged, through whichever connection is up: the same id
        sent again is queued once. ``unavailable`` refusals are retried too."""
        backoff = Backoff(first=0.1, cap=self._max_backoff)
        async with asyncio.timeout(timeout):
            while True:
                link = await self._current()
                try:
                    ack = await link.call(payload, timeout)
                except LinkLost:
                    continue
                if ack.error is None or ack.error.code != "unavailable":
                    return ack
                await backoff.sleep()

    # --- connections ------------------------------------------------------------------
    async def _current(self) -> Link:
        """The open connection, waiting for the next one if need be."""
        while True:
            if self._failure is not None:
                raise self._failure
            link = self._link
            if link is not None and link.ready and not link.gone.is_set():
                return link
            assert self._next_link is not None
            await asyncio.shield(self._next_link)

    async def _supervise(self) -> None:
        """Replace each lost connection, until closed or refused for good."""
        while True:
            link = self._link
            assert link is not None
            await link.gone.wait()
            await link.close()  # if we broke it off (a gap), the socket is still open
            log.info("fleet_client_disconnected", url=link.url, after=self.latest_event_id)
            start = self.urls.index(link.url) + 1
            try:
                self._use(await self._open_any(start))
            except ConnectionRefused as exc:
                self._fail(exc)
                return

    async def _open_any(self, start: int, rounds: int | None = None) -> Link:
        """A connection to the first gateway that takes it, from ``urls[start]`` on,
        round after round (with a growing pause) until ``rounds`` are done; then the
        last refusal if any gateway answered (``unavailable``, say), else ``Unreachable``."""
        backoff = Backoff(first=0.1, cap=self._max_backoff)
        failures: list[str] = []
        refused: ConnectionRefused | None = None
        round_ = 0
        while rounds is None or round_ < rounds:
            for i in range(len(self.urls)):
                url = self.urls[(start + i) % len(self.urls)]
                try:
                    return await self._open(url)
                except ConnectionRefused as exc:
                    if exc.code not in TRANSIENT:
                        raise
                    refused = exc
                except (socketio.exceptions.ConnectionError, OSError, TimeoutError) as exc:
                    failures.append(f"{url}: {_why(exc)}")
            round_ += 1
            if rounds is None or round_ < rounds:
                await backoff.sleep()
        if refused is not None:
            raise refused
        raise Unreachable("no gateway answered: " + "; ".join(failures[-len(self.urls) :]))

    async def _open(self, url: str) -> Link:
        link = Link(url, lambda e: self._on_event(link, e), lambda f, x: self._on_frame(link, f, x))
        auth = {
            "token": self.token,
            "conversation_id": self.conversation_id,
            "latest_event_id": self.latest_event_id,
        }
        # Events may arrive before ``open`` returns: this link must be current by then.
        previous, self._link = self._link, link
        try:
            await link.open(auth, self._transports, self._connect_timeout)
        except BaseException:
            self._link = previous
            raise
        return link

    def _use(self, link: Link) -> None:
        self._link = link
        self.connections += 1
        if self.connections > 1:
            log.info("fleet_client_reconnected", url=link.url, after=self.latest_event_id)
        self._wake()

    def _wake(self) -> None:
        """Wake the calls waiting for a connection (or for the failure)."""
        waking, self._next_link = self._next_link, asyncio.get_running_loop().create_future()
        if waking is not None and not waking.done():
            waking.set_result(None)

    def _fail(self, failure: BaseException) -> None:
        self._failure = failure
        self._updates.put_nowait(_End())
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
        self._wake()

    # --- what arrives, in order -------------------------------------------------------
    def _on_event(self, link: Link, event: Event) -> None:
        if link is not self._link or link.gone.is_set():
            return  # a connection being replaced
        if event.id <= self.latest_event_id:
            return  # delivered already (the replay after a reconnect overlaps)
        if event.id != self.latest_event_id + 1:
            # Never expected (gateways deliver gap-free): reconnect to get the replay.
            log.warning("fleet_client_gap", expected=self.latest_event_id + 1, got=event.id)
            link.gone.set()
            return
        self.latest_event_id = event.id
        self._text.event(event)
        self._updates.put_nowait(event)
        for action_id in ended_turns(event):
            self._answers[action_id] = event
            if len(self._answers) > ANSWERS_REMEMBERED:
                self._answers.popitem(last=False)
            for waiter in self._waiting.pop(action_id, []):
                if not waiter.done():
                    waiter.set_result(event)

    def _on_frame(self, link: Link, frame: StreamFrame, fresh: bool) -> None:
        if link is not self._link or link.gone.is_set():
            return
        update = self._text.frame(frame, fresh)
        if update is not None:
            self._updates.put_nowait(update)


def _why(exc: BaseException) -> str:
    """An error with its causes: python-socketio says only "Connection error" and
    chains what aiohttp said (refused, reset, an HTTP status)."""
    said = [str(exc) or type(exc).__name__]
    cause = exc.__cause__ or exc.__context__
    for _ in range(4):  # the few that say something (a chain can even loop)
        if cause is None:
            break
        if str(cause) not in said[0]:
            said.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return said[0] + "".join(f" ({more})" for more in said[1:])


def _new_id() -> str:
    return uuid.uuid4().hex
