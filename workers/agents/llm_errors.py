"""What an LLM request's failure means for the turn: a ``TurnFailed`` with a stable code
and a one-line message.

The message is shown to the conversation's user, so it says what happened without
internal detail: no URL, no stack trace, no credentials (and, for rate limits and
server errors, not the server's own text, which can name the account).
"""

from __future__ import annotations

import json
import re
from typing import Final

import httpx
import openai

from workers.agents import TurnFailed

# Said by OpenAI, vLLM, LiteLLM and llama.cpp when the prompt does not fit, not always
# with OpenAI's code.
_CONTEXT_TOO_LONG: Final = re.compile(
    r"context[ _-]?length|context window|maximum context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
MAX_DETAIL = 200  # characters of the server's explanation kept in a message


def failure(exc: Exception, retries: int, secret: str | None = None) -> TurnFailed:
    """The ``TurnFailed`` for ``exc``, raised by the SDK (after ``retries`` retries) or
    by the stream it returned; ``secret`` never appears in the message."""
    code, message = _describe(exc, retries)
    if secret:
        message = message.replace(secret, "***")
    return TurnFailed(code, message)


def _describe(exc: Exception, retries: int) -> tuple[str, str]:
    tried = f" (after {retries} retries)" if retries else ""
    # The SDK retried what it raises itself; what the stream raises was not retried:
    # text already streamed cannot be taken back.
    if isinstance(exc, openai.APITimeoutError):
        return "llm_timeout", f"the LLM did not answer in time{tried}"
    if isinstance(exc, httpx.TimeoutException):
        return "llm_timeout", "the LLM stopped sending in the middle of its answer"
    if isinstance(exc, openai.APIConnectionError):
        return "llm_unreachable", f"cannot connect to the LLM server{tried}"
    if isinstance(exc, httpx.TransportError):
        return "llm_unreachable", "the connection to the LLM broke in the middle of its answer"
    if isinstance(exc, openai.RateLimitError):
        return "llm_rate_limited", f"the LLM server is rate limiting requests (429){tried}"
    if isinstance(exc, openai.APIStatusError):
        return _status(exc, tried)
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return "llm_unavailable", f"the LLM failed in the middle of its answer: {_detail(exc)}"
    if isinstance(exc, json.JSONDecodeError):
        return "llm_unavailable", "the LLM sent an answer that is not valid JSON"
    return "llm_unavailable", f"the LLM request failed: {type(exc).__name__}"


def _status(exc: openai.APIStatusError, tried: str) -> tuple[str, str]:
    status = exc.status_code
    if status >= 500:
        return "llm_unavailable", f"the LLM server failed ({status}){tried}"
    detail = _detail(exc)
    if exc.code == "context_length_exceeded" or _CONTEXT_TOO_LONG.search(detail):
        return "context_too_long", "the conversation is too long for the model's context window"
    if status in (401, 403):
        return "llm_bad_request", f"the LLM server refused the API key ({status})"
    return "llm_bad_request", f"the LLM server refused the request ({status}): {detail}"


def _detail(exc: openai.APIError) -> str:
    """The server's explanation on one line, short."""
    body = exc.body
    text = body.get("message") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        text = exc.message
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
