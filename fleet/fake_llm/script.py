"""Scripted replies (``POST /fake/script``) and which one answers a request.

A request is answered by the next unused reply of the first script, in the order they
were posted, whose ``match`` occurs in the text of any of the request's messages; else
by the fallback queue (``match: null``); else by the default reply. Matching the whole
transcript, not only the last message, lets a test put a unique marker in the first
user message and script every later request of that conversation by it: tool-result
rounds and later turns carry the marker along in their history.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from fleet.fake_llm.chat import TOOL_NAME, ChatRequest
from fleet.fake_llm.errors import InvalidRequest, field_names

Chunking = Literal["word", "char"] | PositiveInt
STREAM_FIELDS = frozenset({"content", "tool_calls", "chunk", "delay", "first_delay", "fail_after"})
ERROR_FIELDS = frozenset({"error", "retry_after"})
QUOTED_WORDS = 30


class _Strict(BaseModel):
    # A misspelt field would silently change what a test means: refuse it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedToolCall(_Strict):
    name: str = Field(pattern=TOOL_NAME)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None  # generated when absent

    @property
    def arguments_json(self) -> str:
        """The arguments as the model sends them: a JSON string (a string is sent as is)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


class ScriptedError(_Strict):
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None


class Reply(_Strict):
    """One answer, used once. With ``status`` it is an error response; otherwise text
    and/or tool calls, streamed in ``chunk``-sized pieces when the request streams.
    ``hang``: seconds before anything at all is sent; ``first_delay``: after the headers,
    before the first chunk; ``delay``: between chunks; ``fail_after``: chunks sent
    before the connection is dropped. A reply with neither ``content`` nor
    ``tool_calls`` says what the default reply would."""

    content: str | None = None
    tool_calls: list[ScriptedToolCall] | None = Field(None, min_length=1)
    chunk: Chunking = "word"
    delay: float = Field(0.0, ge=0)
    first_delay: float = Field(0.0, ge=0)
    fail_after: int | None = Field(None, ge=0)
    hang: float = Field(0.0, ge=0)
    status: int | None = Field(None, ge=400, le=599)
    error: ScriptedError | None = None
    retry_after: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Reply:
        if self.status is not None and (both := sorted(self.model_fields_set & STREAM_FIELDS)):
            raise ValueError(f"an error reply ('status') cannot also set {', '.join(both)}")
        if self.status is None and (orphans := sorted(self.model_fields_set & ERROR_FIELDS)):
            raise ValueError(f"{', '.join(orphans)} only go with 'status'")
        return self

    @property
    def says_something(self) -> bool:
        return self.content is not None or self.tool_calls is not None


class NewScript(_Strict):
    """The body of ``POST /fake/script``."""

    match: str | None = Field(None, min_length=1)
    replies: list[Reply] = Field(min_length=1)


_FIELDS = field_names(NewScript, Reply, ScriptedToolCall, ScriptedError)


def parse_script(raw: bytes) -> NewScript:
    """The script in the JSON ``raw``, or ``InvalidRequest`` naming the bad field."""
    try:
        return NewScript.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, _FIELDS) from None


@dataclass
class Script:
    """A posted script and the replies it has left."""

    id: int
    match: str | None
    replies: deque[Reply]
    used: int = 0

    def to_json(self) -> dict[str, Any]:
        left = [reply.model_dump(exclude_defaults=True) for reply in self.replies]
        return {"id": self.id, "match": self.match, "used": self.used, "replies": left}


@dataclass(frozen=True)
class Pick:
    """The reply chosen for a request, and where it came from (no script: the default)."""

    reply: Reply
    script: Script | None = None
    index: int | None = None  # the reply's position in its script


class Scripts:
    """The posted scripts, in order; each reply is handed out once."""

    def __init__(self) -> None:
        self._scripts: list[Script] = []
        self._ids = itertools.count(1)

    def add(self, new: NewScript) -> Script:
        script = Script(next(self._ids), new.match, deque(new.replies))
        self._scripts.append(script)
        return script

    def pending(self) -> list[Script]:
        return list(self._scripts)

    def clear(self) -> int:
        """Forget every script; how many there were."""
        count = len(self._scripts)
        self._scripts.clear()
        return count

    def pick(self, request: ChatRequest, pace: float) -> Pick:
        """The reply that answers ``request`` (the rule is in this module's docstring);
        ``pace``: words per second of the default reply."""
        transcript = request.transcript
        matching = (s for s in self._scripts if s.match is not None and s.match in transcript)
        fallback = (s for s in self._scripts if s.match is None)
        script = next(matching, None) or next(fallback, None)
        if script is None:
            return Pick(Reply(content=default_text(request), delay=1 / pace))
        reply, index = script.replies.popleft(), script.used
        script.used += 1
        if not script.replies:
            self._scripts.remove(script)  # spent
        if not reply.says_something:
            reply = reply.model_copy(update={"content": default_text(request)})
        return Pick(reply, script, index)


def default_text(request: ChatRequest) -> str:
    """What the fake says when nothing is scripted: a friendly line quoting the user."""
    said = request.last_user_text
    if not said or not said.split():
        return "Hello! I am fleet's fake LLM. Say something and I will quote it back."
    words = said.split()
    quote = " ".join(words[:QUOTED_WORDS]) + (" …" if len(words) > QUOTED_WORDS else "")
    return (
        f'You said: "{quote}". I am fleet\'s fake LLM, a stand-in for a real model: '
        "tests script my replies over HTTP, and this is what I say when nothing is scripted."
    )
