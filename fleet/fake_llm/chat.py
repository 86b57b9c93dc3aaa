"""The Chat Completions request, checked the way OpenAI checks it: a malformed body is
an ``InvalidRequest`` that names the offending parameter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleet.fake_llm.errors import InvalidRequest, field_names

TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class _Open(BaseModel):
    # OpenAI adds parameters often: those the fake does not know are kept, not refused.
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str
    arguments: str


class MessageToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Message:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an 'assistant' message needs 'content' or 'tool_calls'")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a '{self.role}' message needs 'content'")
        return self

    @property
    def text(self) -> str:
        """The message's text, its text parts joined."""
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class FunctionName(_Open):
    name: str = Field(pattern=TOOL_NAME)


class Function(FunctionName):
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"]
    function: Function


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    """The body of ``POST /v1/chat/completions``; parameters the fake ignores (sampling,
    lengths) are still checked, so that a client's mistake shows here first."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: Literal[1] | None = None  # the fake answers with one choice

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def transcript(self) -> str:
        """Every message's text, one per line: what a script's ``match`` is looked for in."""
        return "\n".join(message.text for message in self.messages)

    @property
    def last_user_text(self) -> str | None:
        users = [message.text for message in self.messages if message.role == "user"]
        return users[-1] if users else None


_FIELDS = field_names(
    ChatRequest, Message, ContentPart, MessageToolCall, FunctionCall, Tool, Function,
    NamedToolChoice, StreamOptions,
)  # fmt: skip


def parse_request(raw: bytes) -> ChatRequest:
    """The request in the JSON ``raw``, or ``InvalidRequest``."""
    try:
        request = ChatRequest.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, _FIELDS) from None
    _check_options(request)
    _check_tool_answers(request.messages)
    return request


def _check_options(request: ChatRequest) -> None:
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    if request.tool_choice is not None and not request.tools:
        raise InvalidRequest(
            "'tool_choice' is only allowed when 'tools' are specified.", "tool_choice"
        )
    if isinstance(request.tool_choice, NamedToolChoice):
        chosen = request.tool_choice.function.name
        if chosen not in {tool.function.name for tool in request.tools or []}:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': no tool named '{chosen}' in 'tools'.",
                "tool_choice",
                "invalid_value",
            )


def _check_tool_answers(messages: list[Message]) -> None:
    """As OpenAI does: each ``tool`` message answers a call of the assistant message
    before it, and every call is answered before anything else is said."""
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if message.role == "tool":
            answered = message.tool_call_id
            if answered is None or answered not in pending:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (no pending call '{answered}').",
                    f"messages[{index}].tool_call_id",
                )
            pending.discard(answered)
            continue
        if pending:
            raise _unanswered(pending, f"messages[{index}]")
        pending = {call.id for call in message.tool_calls or []}
    if pending:
        raise _unanswered(pending, "messages")


def _unanswered(pending: set[str], param: str) -> InvalidRequest:
    return InvalidRequest(
        "An assistant message with 'tool_calls' must be followed by tool messages "
        f"responding to each 'tool_call_id'; not answered: {', '.join(sorted(pending))}.",
        param,
    )
