"""A conversation's log as Chat Completions messages: what the LLM is sent.

The log holds turns that were stopped, interrupted or failed half way, and user
messages steered in while tools ran. OpenAI (and the servers that copy it) refuses an
assistant message whose tool calls are not all answered by the ``tool`` messages right
after it, so the transcript keeps the sequence valid: a user message said while calls
are open waits until they are answered, and calls never answered are dropped.

A long-lived conversation would outgrow the model's context: what earlier turns said
is sent within a budget of characters, the latest first; the current turn goes whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

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
    """Chat Completions messages built from logged events, added in log order.

    With a ``budget``, the messages before the current turn's user message (the event
    ``turn_message``) are sent only as far as their characters fit, newest first.
    """

    def __init__(
        self,
        system_prompt: str = SYSTEM_PROMPT,
        budget: int | None = None,
        turn_message: int | None = None,
    ) -> None:
        self._messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system_prompt}
        ]
        self._budget = budget
        self._turn_message = turn_message
        self._turn_start: ChatCompletionMessageParam | None = None  # never cut, nor after
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
        system, *rest = self._messages
        return [system, *self._within_budget(rest)]

    def _within_budget(
        self, messages: list[ChatCompletionMessageParam]
    ) -> list[ChatCompletionMessageParam]:
        """The latest earlier messages whose characters fit the budget, then the current
        turn's; never a tool result whose call was cut."""
        if self._budget is None:
            return messages
        turn = next((i for i, m in enumerate(messages) if m is self._turn_start), len(messages))
        size = sum(_chars(m) for m in messages[:turn])
        cut = 0
        while cut < turn and (size > self._budget or messages[cut]["role"] == "tool"):
            size -= _chars(messages[cut])
            cut += 1
        return messages[cut:]

    def _user(self, event: Event) -> None:
        if event.id in self._user_ids:
            return
        self._user_ids.add(event.id)
        message: ChatCompletionUserMessageParam = {
            "role": "user",
            "content": str(event.data.get("content", "")),
        }
        if event.id == self._turn_message:
            self._turn_start = message
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


def _chars(message: ChatCompletionMessageParam) -> int:
    """What a message costs of the budget: its text, and its tool calls' names and
    arguments."""
    content = message.get("content")
    size = len(content) if isinstance(content, str) else 0
    # The only calls a transcript holds are ``_call``'s.
    calls = cast(list[ChatCompletionMessageFunctionToolCallParam], message.get("tool_calls", []))
    for call in calls:
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return size


def _call(call: Mapping[str, Any]) -> ChatCompletionMessageFunctionToolCallParam:
    """A logged tool call (``id``, ``name``, ``arguments``) in OpenAI's shape."""
    return {
        "id": str(call["id"]),
        "type": "function",
        "function": {"name": str(call["name"]), "arguments": str(call.get("arguments") or "{}")},
    }
