"""One conversation's owner queries: completions its clients ask of its agent.

A query is a question, not a turn: it runs beside the turns (never queued behind the
running one), logs nothing, and is answered on its message's reply-to. Its message is
acknowledged on arrival: a query lost with its owner is not asked again (its asker
times out and may retry), so a crash never costs a second LLM call nobody waits for.
"""

from __future__ import annotations

import asyncio
import time

from structlog.typing import FilteringBoundLogger

from broker.amqp import Broker
from broker.events import Query, QueryAnswer, encode_answer
from workers.agents import Agent, Completer, TurnFailed

NOT_SUPPORTED = QueryAnswer(
    code="not_supported", message="this conversation's agent does not answer completions"
)
GONE = QueryAnswer(code="unavailable", message="the conversation moved to another worker; retry")
CLOSED = QueryAnswer(code="conversation_closed", message="the conversation is closed")


class OwnerQueries:
    """The queries in flight of one conversation, each a task of its own."""

    def __init__(self, agent: Agent, broker: Broker, log: FilteringBoundLogger) -> None:
        self._agent = agent
        self._broker = broker
        self._log = log
        self._running: set[asyncio.Task[None]] = set()
        self.last_end = time.monotonic()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def start(self, query: Query, reply_to: str | None, correlation_id: str | None) -> None:
        """Answer ``query`` in a task of its own (a query with nowhere to answer is
        dropped: nobody waits for it)."""
        if not reply_to or not correlation_id:
            self._log.warning("query_without_reply_to")
            return
        task = asyncio.create_task(self._answer(query, reply_to, correlation_id))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.last_end = time.monotonic()

    async def refuse(self, reply_to: str | None, correlation_id: str | None) -> None:
        """Answer at once that the conversation is closed."""
        if reply_to and correlation_id:
            await self._reply(reply_to, correlation_id, CLOSED)

    async def close(self) -> None:
        """The loop ends (drain, fencing, close): cancel the queries in flight; each
        tells its asker to retry (the next owner answers)."""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _answer(self, query: Query, reply_to: str, correlation_id: str) -> None:
        try:
            # Its asker waits no longer than this: an answer after it is wasted.
            async with asyncio.timeout(query.timeout):
                answer = await self._complete(query)
        except asyncio.CancelledError:
            await self._reply(reply_to, correlation_id, GONE)
            raise
        except TimeoutError:  # the agent's own failures are answers (see _complete)
            self._log.info("query_expired", timeout=query.timeout)
            return
        await self._reply(reply_to, correlation_id, answer)

    async def _complete(self, query: Query) -> QueryAnswer:
        agent = self._agent
        if not isinstance(agent, Completer):
            return NOT_SUPPORTED
        try:
            return QueryAnswer(content=await agent.complete(query.messages))
        except TurnFailed as failed:
            self._log.warning("query_failed", code=failed.code, error=failed.message)
            return QueryAnswer(code=failed.code, message=failed.message)
        except Exception as exc:
            self._log.exception("query_agent_failed")
            return QueryAnswer(code="agent_failed", message=f"agent failed: {exc!r}")

    async def _reply(self, reply_to: str, correlation_id: str, answer: QueryAnswer) -> None:
        try:
            await self._broker.answer(reply_to, correlation_id, encode_answer(answer))
        except Exception as exc:  # its asker times out instead
            self._log.warning("query_reply_failed", error=repr(exc))
