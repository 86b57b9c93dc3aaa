"""One streamed Chat Completions request: the model's answer (text and tool calls),
its text shown as it arrives, and its failures as ``TurnFailed``.

Only standard Chat Completions fields are sent and read, so that OpenAI, vLLM, Ollama,
llama.cpp and LiteLLM all work; the deltas are assembled here rather than by the SDK's
``stream()`` helper, which expects OpenAI's exact chunk shapes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from workers.agents.llm_errors import failure


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for; ``arguments`` is JSON text, as the model wrote it."""

    id: str
    name: str
    arguments: str

    def to_data(self) -> dict[str, str]:
        """As a logged step lists it."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's whole answer to one request."""

    content: str
    tool_calls: list[ToolCall]


@dataclass
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Assembly:
    """Deltas put together into an ``Answer``."""

    def __init__(self, on_text: Callable[[str], None]) -> None:
        self._on_text = on_text
        self._text: list[str] = []
        self._calls: dict[int, _CallParts] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:  # none in a usage chunk; one otherwise (n=1)
            delta = choice.delta
            for text in (delta.content, delta.refusal):
                if text:
                    self._text.append(text)
                    self._on_text(text)
            for position, call in enumerate(delta.tool_calls or []):
                # Some servers leave out ``index`` when they send each call whole.
                index = call.index if call.index is not None else len(self._calls) + position
                parts = self._calls.setdefault(index, _CallParts())
                # id and name come once from OpenAI; some servers repeat them: first wins.
                parts.id = parts.id or call.id or ""
                if call.function is not None:
                    parts.name = parts.name or call.function.name or ""
                    if call.function.arguments:
                        parts.arguments.append(call.function.arguments)

    def answer(self) -> Answer:
        calls = [
            ToolCall(
                # A call needs an id for its result to answer; a few servers send none.
                parts.id or f"call_{secrets.token_hex(12)}",
                parts.name,
                "".join(parts.arguments),
            )
            for _, parts in sorted(self._calls.items())
        ]
        return Answer("".join(self._text), calls)


async def ask(
    client: AsyncOpenAI,
    model: str,
    messages: Sequence[ChatCompletionMessageParam],
    tools: Sequence[ChatCompletionToolParam],
    on_text: Callable[[str], None],
) -> Answer:
    """Ask the model, streaming; ``on_text`` gets each piece of text as it arrives.
    Raises ``TurnFailed``. Cancelled, it closes the HTTP request, so the server stops."""
    assembly = _Assembly(on_text)
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            tools=tools or omit,  # OpenAI refuses an empty list: none, then no field
            stream=True,
        )
        # The context manager closes the response however we leave, cancellation included.
        async with stream:
            async for chunk in stream:
                assembly.add(chunk)
    except (openai.APIError, httpx.HTTPError, json.JSONDecodeError) as exc:
        raise failure(exc, client.max_retries, client.api_key) from exc
    return assembly.answer()
