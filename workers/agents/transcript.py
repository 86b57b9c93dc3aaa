"""A conversation's log as Chat Completions messages: what the LLM is sent.

The log holds turns that were stopped, interrupted or failed half way, and user
messages steered in while tools ran. OpenAI (and the servers that copy it) refuses an
assistant message whose tool calls are not all answered by the ``tool`` messages right
after it, so the transcript keeps the sequence valid: a user message said while calls
are open waits until they are answered, and calls never answered are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionUserMessageParam,
)

from broker.events import ChatMessage, Event

SYSTEM_PROMPT = (
    "You are a helpful assistant in a chat. Answer clearly and briefly. "
    "When a tool would give a more reliable answer (the time, arithmetic, ...), call it "
    "rather than guessing."
)


def as_chat(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    """A client's own messages (an owner query), as they are."""
    chat: list[ChatCompletionMessageParam] = []
    for message in messages:
        if message.role == "system":
            chat.append({"role": "system", "content": message.content})
        elif message.role == "assistant":
            chat.append({"role": "assistant", "content": message.content})
        else:
            chat.append({"role": "user", "content": message.content})
    return chat


def is_user_message(event: Event) -> bool:
    return event.source == "user" and event.kind == "message"


class Transcript:
    """Chat Completions messages built from logged events, added in log order."""

    def __init__(self, system_prompt: str = SYSTEM_PROMPT) -> None:
        self._messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system_prompt}
        ]
        self._user_ids: set[int] = set()  # user messages already in
        # The last assistant message while some of its tool calls are unanswered.
        self._open: ChatCompletionAssistantMessageParam | None = None
        self._unanswered: set[str] = set()
        self._answered: set[str] = set()
        self._held: list[ChatCompletionUserMessageParam] = []  # said while calls were open

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        """Add what ``event`` says to the LLM, if anything (a user message is added once
        however often it is given)."""
        if is_user_message(event):
            self._user(event)
        elif event.source == "agent" and event.kind == "message":
            self._assistant(event.data)
        elif event.source == "agent" and event.kind == "tool_result":
            self._tool_result(event.data)
        # Anything else (state, error, turn_aborted, stop, closed, ...) is not for the LLM.

    def messages(self) -> list[ChatCompletionMessageParam]:
        """The messages to send now; calls still unanswered are dropped for good."""
        self._close()
        return list(self._messages)

    def _user(self, event: Event) -> None:
        if event.id in self._user_ids:
            return
        self._user_ids.add(event.id)
        message: ChatCompletionUserMessageParam = {
            "role": "user",
            "content": str(event.data.get("content", "")),
        }
        if self._open is not None:
            self._held.append(message)
        else:
            self._messages.append(message)

    def _assistant(self, data: Mapping[str, Any]) -> None:
        self._close()
        content = str(data.get("content") or "")
        calls = [_call(call) for call in data.get("tool_calls") or []]
        if not calls:
            if content:  # an empty answer says nothing, and some servers refuse it
                self._messages.append({"role": "assistant", "content": content})
            return
        # OpenAI itself sends null, not "", as the content of an answer that only calls.
        message: ChatCompletionAssistantMessageParam = {
            "role": "assistant",
            "content": content or None,
            "tool_calls": calls,
        }
        self._messages.append(message)
        self._open = message
        self._unanswered = {call["id"] for call in calls}
        self._answered = set()

    def _tool_result(self, data: Mapping[str, Any]) -> None:
        call_id = data.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in self._unanswered:
            return  # a result with no open call to answer would be refused
        self._unanswered.discard(call_id)
        self._answered.add(call_id)
        self._messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": str(data.get("content", ""))}
        )
        if not self._unanswered:
            self._close()

    def _close(self) -> None:
        """End the open assistant message: keep only its answered calls, then add what
        was said meanwhile."""
        message = self._open
        if message is None:
            return
        if self._unanswered:
            kept = [c for c in message.get("tool_calls", []) if c["id"] in self._answered]
            if kept:
                message["tool_calls"] = kept
            elif message.get("content"):
                del message["tool_calls"]
            else:  # nothing answered, so no tool message follows it: it is the last one
                self._messages.pop()
        self._open = None
        self._unanswered = set()
        self._answered = set()
        self._messages.extend(self._held)
        self._held = []


def _call(call: Mapping[str, Any]) -> ChatCompletionMessageFunctionToolCallParam:
    """A logged tool call (``id``, ``name``, ``arguments``) in OpenAI's shape."""
    return {
        "id": str(call["id"]),
        "type": "function",
        "function": {"name": str(call["name"]), "arguments": str(call.get("arguments") or "{}")},
    }
