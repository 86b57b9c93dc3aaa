"""The Chat Completions answer on the wire: the ``chat.completion`` object, its
``chat.completion.chunk`` stream and the SSE framing the ``openai`` SDK parses."""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from fleet.fake_llm.chat import ChatRequest
from fleet.fake_llm.script import Chunking, Reply

JSON = "application/json"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_fleet_fake"
CHARS_PER_TOKEN = 4  # the rough figure OpenAI gives for English text
WORD = re.compile(r"\s*\S+\s*")

JsonObject = dict[str, Any]


def sse(data: JsonObject) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def split(text: str, chunking: Chunking) -> list[str]:
    """``text`` in pieces that join back to it exactly: words (each with the blanks
    around it), characters, or runs of ``chunking`` characters."""
    if chunking == "word":
        return WORD.findall(text) or ([text] if text else [])
    size = 1 if chunking == "char" else chunking
    return [text[start : start + size] for start in range(0, len(text), size)]


def tokens(text: str) -> int:
    """A rough token count: about four characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class Completion:
    """One answer, from which both the ``chat.completion`` object and its chunks are built."""

    id: str
    model: str
    created: int
    content: str | None
    tool_calls: list[ToolCall]
    prompt_tokens: int

    @classmethod
    def of(cls, request: ChatRequest, reply: Reply) -> Completion:
        calls = [
            ToolCall(call.id or f"call_{secrets.token_hex(12)}", call.name, call.arguments_json)
            for call in reply.tool_calls or []
        ]
        return cls(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            model=request.model,
            created=int(time.time()),
            content=reply.content,
            tool_calls=calls,
            prompt_tokens=tokens(request.transcript),
        )

    @property
    def finish_reason(self) -> Literal["stop", "tool_calls"]:
        return "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> JsonObject:
        said = (self.content or "") + "".join(call.arguments for call in self.tool_calls)
        completion = tokens(said)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def to_object(self) -> JsonObject:
        """The non-streamed ``chat.completion``."""
        message: JsonObject = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = [call.to_json() for call in self.tool_calls]
        choice = {"index": 0, "message": message, "logprobs": None}
        return {
            **self._envelope("chat.completion"),
            "choices": [{**choice, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
        }

    def chunks(self, chunking: Chunking, include_usage: bool) -> list[JsonObject]:
        """The streamed ``chat.completion.chunk`` objects: one per piece of content or of
        a tool call's arguments (the first also carrying the role, and each tool call's
        first its id and name), then the finish reason, then the usage if asked for."""
        deltas: list[JsonObject] = [
            {"content": piece} for piece in split(self.content or "", chunking)
        ]
        for index, call in enumerate(self.tool_calls):
            header = {**call.to_json(), "function": {"name": call.name, "arguments": ""}}
            deltas.append({"tool_calls": [{"index": index, **header}]})
            deltas += [
                {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                for piece in split(call.arguments, chunking)
            ]
        first = deltas[0] if deltas else {"content": ""}
        deltas[:1] = [{"role": "assistant", **first}]
        usage = {"usage": None} if include_usage else {}
        chunks = [self._chunk(delta, None, usage) for delta in deltas]
        chunks.append(self._chunk({}, self.finish_reason, usage))
        if include_usage:
            chunks.append(
                {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage()}
            )
        return chunks

    def _chunk(self, delta: JsonObject, finish_reason: str | None, usage: JsonObject) -> JsonObject:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice], **usage}

    def _envelope(self, kind: str) -> JsonObject:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }
