"""Domain exceptions; the gateway turns them into protocol errors ``{code, message}``."""

from __future__ import annotations


class FleetError(Exception):
    """An error a client may see: a stable ``code`` and a human ``message``."""

    code = "internal_error"
    status = 500
    # Seconds after which a retry may succeed: HTTP's Retry-After.
    retry_after: float | None = None

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(FleetError):
    """The request is malformed; the message says how."""

    code = "bad_request"
    status = 400


class PayloadTooLarge(FleetError):
    """The body (or action) is over FLEET_MAX_PAYLOAD_BYTES."""

    code = "payload_too_large"
    status = 413


class Unauthorized(FleetError):
    """No token, or one that is invalid or expired."""

    code = "unauthorized"
    status = 401


class Forbidden(FleetError):
    """The token is valid but lacks the right (an admin route without ``admin: true``)."""

    code = "forbidden"
    status = 403


class NotFound(FleetError):
    """No such conversation, or another user's."""

    code = "not_found"
    status = 404


class ConversationClosed(FleetError):
    """The conversation is closed (or closing): it takes no more input."""

    code = "conversation_closed"
    status = 409


class QueueGone(ConversationClosed):
    """The conversation's queue does not exist: it was closed, or passivated."""


class Busy(FleetError):
    """A message sent while the agent runs a turn, to a conversation that rejects those."""

    code = "busy"
    status = 409


class Conflict(FleetError):
    """An action id reused for another content."""

    code = "conflict"
    status = 409


class LogFull(FleetError):
    """The conversation's log reached its cap: it takes no more input."""

    code = "conversation_full"
    status = 409


class TooManyConversations(FleetError):
    """The user runs FLEET_MAX_CONVERSATIONS_PER_USER conversations already."""

    code = "too_many_conversations"
    status = 429


class TooManyConnections(FleetError):
    """The user has FLEET_MAX_CONNECTIONS_PER_USER Socket.IO connections already."""

    code = "too_many_connections"
    status = 429


class RateLimited(FleetError):
    """Over the user's FLEET_RATE_LIMIT, across every gateway."""

    code = "rate_limited"
    status = 429


class Unavailable(FleetError):
    """The broker or Redis could not take the request; the client may retry."""

    code = "unavailable"
    status = 503
    retry_after = 1.0


class NotSupported(FleetError):
    """The conversation's agent cannot do what was asked (answer a completion)."""

    code = "not_supported"
    status = 501


class AgentFailed(FleetError):
    """The conversation's owner could not answer a query: its LLM failed (``code`` is
    the LLM error's, as a failed turn logs it) or its agent did."""

    status = 502

    def __init__(
        self, code: str, message: str, status: int = 502, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after)
        self.code = code
        self.status = status


class LeaseLost(Exception):
    """A fenced write was refused: another worker holds a newer epoch."""
