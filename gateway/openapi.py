"""The HTTP API as an OpenAPI 3.1 document, served at ``/openapi.json``.

Every route, body, answer and error code, exactly: ``tests/gateway/test_openapi.py``
fuzzes a live gateway from it, validating each answer, and fails on a route of the
app that the document lacks. A new route is an entry of ``PATHS`` (its ``refusals``
name the ``FleetError`` classes it may answer with); a new field of an answer goes
into its schema below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from broker.errors import (
    BadRequest,
    Busy,
    Conflict,
    ConversationClosed,
    FleetError,
    Forbidden,
    LogFull,
    NotFound,
    NotSupported,
    PayloadTooLarge,
    RateLimited,
    TooManyConversations,
    Unauthorized,
    Unavailable,
)
from broker.events import ACTION_ID, CHAT_ROLES, MAX_ID_FIELD, MAX_QUERY_MESSAGES
from broker.history import Happening
from broker.names import CONVERSATION_ID, Role
from broker.settings import BusyPolicy
from broker.store import Status
from gateway.operations import MAX_PAGE

Schema = dict[str, Any]

# --- schemas --------------------------------------------------------------------------


def enum_of(literal: Any) -> list[str]:
    return list(literal.__args__)


EVENT: Schema = {
    "type": "object",
    "description": "A logged event; ids are consecutive from 0 per conversation.",
    "required": ["id", "conversation_id", "source", "kind", "data", "ts"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "conversation_id": {"type": "string"},
        "source": {"enum": ["user", "agent", "system"]},
        "kind": {"type": "string", "description": "message, state, error, closed, ..."},
        "data": {"type": "object"},
        "ts": {"type": "number", "description": "when it was logged (epoch seconds)"},
    },
}
CONVERSATION: Schema = {
    "type": "object",
    "required": [
        "conversation_id",
        "status",
        "owner",
        "created_at",
        "last_event_id",
        "agent_state",
        "connections",
    ],
    "additionalProperties": False,
    "properties": {
        "conversation_id": {"type": "string"},
        "status": {"enum": enum_of(Status)},
        "owner": {"type": ["string", "null"], "description": "the worker running it"},
        "created_at": {"type": "number", "description": "epoch seconds"},
        "last_event_id": {"type": "integer", "minimum": -1, "description": "-1: none yet"},
        "agent_state": {
            "type": ["string", "null"],
            "description": "the agent's last logged state; null before its first turn",
        },
        "connections": {
            "type": "integer",
            "minimum": 0,
            "description": "Socket.IO clients connected to it, across every gateway",
        },
    },
}
ACTION_ID_SCHEMA: Schema = {
    "type": ["string", "null"],
    "pattern": ACTION_ID.pattern,
    "description": "chosen by the client to send it again safely; generated if absent or null",
}
ACTION: Schema = {
    "description": "What `user_action` takes: a message, a stop of the running turn, or an "
    "approval answer.",
    "oneOf": [
        {
            "type": "object",
            "required": ["kind", "data"],
            "properties": {
                "kind": {"const": "message"},
                "data": {
                    "type": "object",
                    "required": ["content"],
                    "properties": {"content": {"type": "string"}},
                },
                "action_id": ACTION_ID_SCHEMA,
            },
        },
        {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"const": "stop"}, "action_id": ACTION_ID_SCHEMA},
            "description": "any `data` is ignored",
        },
        {
            "type": "object",
            "required": ["kind", "data"],
            "description": "the answer to an `approval_request` (one of its options)",
            "properties": {
                "kind": {"const": "approval"},
                "data": {
                    "type": "object",
                    "required": ["request_id", "choice"],
                    "properties": {
                        "request_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_FIELD},
                        "choice": {"type": "string", "minLength": 1, "maxLength": MAX_ID_FIELD},
                    },
                },
                "action_id": ACTION_ID_SCHEMA,
            },
        },
    ],
}
NEW_CONVERSATION: Schema = {
    "type": "object",
    "properties": {
        "initial_message": {"type": ["string", "null"], "description": "its first message"},
        "on_busy": {
            "enum": [*enum_of(BusyPolicy), None],
            "description": "input while a turn runs; null or absent: FLEET_ON_BUSY",
        },
        "callback_url": {
            "type": ["string", "null"],
            "description": "where its state changes are POSTed too (webhooks; http(s), a "
            "public address)",
        },
    },
}
QUERY: Schema = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_QUERY_MESSAGES,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": list(CHAT_ROLES)},
                    "content": {"type": "string"},
                },
            },
        }
    },
}
ACK: Schema = {
    "type": "object",
    "required": ["ok", "action_id"],
    "additionalProperties": False,
    "properties": {"ok": {"const": True}, "action_id": {"type": "string"}},
}
OK: Schema = {
    "type": "object",
    "required": ["ok"],
    "additionalProperties": False,
    "properties": {"ok": {"type": "boolean"}},
}


PROCESS: Schema = {
    "type": "object",
    "required": ["id", "alive", "ttl_ms", "conversations", "shown", "connections"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "alive": {"type": "boolean", "description": "its liveness key exists"},
        "ttl_ms": {"type": ["integer", "null"], "description": "what is left of it"},
        "conversations": {"type": "integer", "description": "owned, or with clients here"},
        "shown": {"type": "array", "items": {"type": "string"}, "description": "some of them"},
        "connections": {"type": "integer", "description": "clients connected (gateways)"},
    },
}
RECORD: Schema = {
    "type": "object",
    "required": ["at", "happened", "role", "process_id", "conversations", "reason"],
    "additionalProperties": False,
    "properties": {
        "at": {"type": "number", "description": "epoch seconds, the Redis clock"},
        "happened": {"enum": enum_of(Happening)},
        "role": {"enum": enum_of(Role)},
        "process_id": {"type": "string"},
        "conversations": {
            "type": ["integer", "null"],
            "description": "moved (died), stopped (fenced), handed over (left); a gateway's: "
            "those it had clients of",
        },
        "reason": {"type": ["string", "null"]},
    },
}
OVERVIEW: Schema = {
    "type": "object",
    "required": ["now", "workers", "gateways", "conversations", "pending", "history"],
    "additionalProperties": False,
    "properties": {
        "now": {"type": "number", "description": "the Redis clock, epoch seconds"},
        "workers": {"type": "array", "items": PROCESS},
        "gateways": {"type": "array", "items": PROCESS},
        "conversations": {
            "type": "array",
            "description": "owned, owed an owner, or with clients (200 at most)",
            "items": {
                "type": "object",
                "required": [
                    "conversation_id",
                    "user",
                    "status",
                    "owner",
                    "epoch",
                    "clients",
                    "last_event_id",
                    "pending_since",
                ],
                "additionalProperties": False,
                "properties": {
                    "conversation_id": {"type": "string"},
                    "user": {"type": ["string", "null"]},
                    "status": {"enum": [*enum_of(Status), None]},
                    "owner": {"type": ["string", "null"], "description": "its lease's worker"},
                    "epoch": {"type": ["integer", "null"], "description": "its lease's epoch"},
                    "clients": {"type": "integer"},
                    "last_event_id": {"type": "integer", "minimum": -1},
                    "pending_since": {"type": ["number", "null"]},
                },
            },
        },
        "pending": {"type": "integer", "description": "conversations owed an owner"},
        "history": {
            "type": "array",
            "items": RECORD,
            "description": "the fleet's recent history, newest first (100 at most): workers "
            "that joined, fenced themselves, left after a drain or died; gateways that died",
        },
    },
}
STREAMING: Schema = {
    "type": "object",
    "required": ["stream"],
    "additionalProperties": False,
    "properties": {
        "stream": {
            "description": "the step being streamed, its whole text so far in `delta`",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": [
                        "conversation_id",
                        "turn_id",
                        "epoch",
                        "step",
                        "seq",
                        "delta",
                        "ts",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "conversation_id": {"type": "string"},
                        "turn_id": {"type": "string"},
                        "epoch": {"type": "integer"},
                        "step": {"type": "integer"},
                        "seq": {"type": "integer"},
                        "delta": {"type": "string"},
                        "ts": {"type": "number"},
                    },
                },
            ],
        }
    },
}


def error_schema(codes: list[str] | None) -> Schema:
    """The JSON error, with one of ``codes`` (None: any)."""
    code: Schema = {"type": "string"} if codes is None else {"enum": codes}
    return {
        "type": "object",
        "required": ["ok", "error"],
        "additionalProperties": False,
        "properties": {
            "ok": {"const": False},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {"code": code, "message": {"type": "string"}},
            },
        },
    }


# --- operations -----------------------------------------------------------------------


def json_answer(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True, slots=True)
class Code:
    """An error answer: its HTTP status and code (None: codes an agent chooses)."""

    status: int
    code: str | None
    meaning: str


def code_of(refusal: type[FleetError] | Code) -> Code:
    if isinstance(refusal, Code):
        return refusal
    return Code(refusal.status, refusal.code, (refusal.__doc__ or refusal.code).strip())


def answers(
    status: int, description: str, schema: Schema, *refusals: type[FleetError] | Code
) -> dict[str, Schema]:
    """The success answer, then one answer per status the ``refusals`` are sent with:
    the JSON error, its codes, and ``Retry-After`` where they carry one."""
    out = {str(status): json_answer(description, schema)}
    by_status: dict[int, list[Code]] = {}
    for refusal in map(code_of, refusals):
        by_status.setdefault(refusal.status, []).append(refusal)
    for code, codes in sorted(by_status.items()):
        named = [c.code for c in codes if c.code is not None]
        answer = json_answer(
            "; ".join(f"`{c.code or '...'}`: {c.meaning}" for c in codes),
            error_schema(None if len(named) < len(codes) else named),
        )
        if code in (429, 503):
            answer["headers"] = {
                "Retry-After": {
                    "description": "seconds after which a retry may succeed",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            }
        out[str(code)] = answer
    return out


# Every /api request: its token, the user's rate, and Redis or RabbitMQ being reachable
# (or the identity provider, for its tokens); /api/admin also needs an admin token.
API = (Unauthorized, RateLimited, Unavailable)
ADMIN = (*API, Forbidden)
BODY = (BadRequest, PayloadTooLarge)


def query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


CID = {
    "name": "cid",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": f"a conversation id ({CONVERSATION_ID.pattern}); another user's is not found",
}
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size")


EVENTS: Schema = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {"events": {"type": "array", "items": EVENT}},
}
AFTER = query("after", {"type": "integer", "minimum": -1}, "default -1: from the start")


def api(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    """An operation that needs a bearer token."""
    return {"summary": summary, "security": [{"bearer": []}], "responses": responses, **extra}


def body(schema: Schema) -> Schema:
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def page(summary: str, media_type: str) -> Schema:
    return {
        "summary": summary,
        "responses": {
            "200": {"description": summary, "content": {media_type: {"schema": {"type": "string"}}}}
        },
    }


PATHS: dict[str, dict[str, Schema]] = {
    "/api/conversations": {
        "post": api(
            "Create a conversation and start it",
            answers(
                201,
                "created",
                {
                    "type": "object",
                    "required": ["conversation_id"],
                    "additionalProperties": False,
                    "properties": {"conversation_id": {"type": "string"}},
                },
                *API,
                *BODY,
                TooManyConversations,
            ),
            requestBody=body(NEW_CONVERSATION),
        ),
        "get": api(
            "Your conversations, oldest first",
            answers(
                200,
                "a page of them",
                {
                    "type": "object",
                    "required": ["conversations"],
                    "additionalProperties": False,
                    "properties": {"conversations": {"type": "array", "items": CONVERSATION}},
                },
                *API,
                BadRequest,
            ),
            parameters=[
                query("after", {"type": "string"}, "the last conversation id of the previous page"),
                LIMIT,
            ],
        ),
    },
    "/api/conversations/{cid}": {
        "get": api(
            "One of your conversations",
            answers(200, "it", CONVERSATION, *API, NotFound),
            parameters=[CID],
        ),
        "delete": api(
            "Close a conversation for good (its queued input is answered first)",
            answers(202, "closing", OK, *API, NotFound),
            parameters=[CID],
        ),
    },
    "/api/conversations/{cid}/events": {
        "get": api(
            "The conversation's log after an event id",
            answers(
                200,
                "events with id > after, oldest first",
                EVENTS,
                *API,
                BadRequest,
                NotFound,
            ),
            parameters=[CID, AFTER, LIMIT],
        ),
    },
    "/api/conversations/{cid}/actions": {
        "post": api(
            "Send an action, as `user_action` does",
            answers(
                200,
                "queued (acknowledged by the broker)",
                ACK,
                *API,
                *BODY,
                NotFound,
                Busy,
                Conflict,
                ConversationClosed,
                LogFull,
                TooManyConversations,
            ),
            parameters=[CID],
            requestBody={"required": True, "content": {"application/json": {"schema": ACTION}}},
        ),
    },
    "/api/conversations/{cid}/completions": {
        "post": api(
            "Ask the conversation's model, through its owner (nothing is logged)",
            answers(
                200,
                "the model's answer",
                {
                    "type": "object",
                    "required": ["content"],
                    "additionalProperties": False,
                    "properties": {"content": {"type": "string"}},
                },
                *API,
                *BODY,
                NotFound,
                ConversationClosed,
                TooManyConversations,
                NotSupported,
                Code(400, "context_too_long", "the messages do not fit the model's context"),
                Code(429, "llm_rate_limited", "the LLM server refuses requests for now"),
                Code(
                    502,
                    None,
                    "the model or the agent failed: `llm_unavailable`, `llm_unreachable`, "
                    "`llm_bad_request`, `agent_failed`, or an agent's own code",
                ),
                Code(504, "llm_timeout", "the LLM did not answer in time"),
            ),
            parameters=[CID],
            requestBody={"required": True, "content": {"application/json": {"schema": QUERY}}},
        ),
    },
    "/api/admin/fleet": {
        "get": api(
            "The fleet now: workers, gateways, conversations, recent history (admin tokens only)",
            answers(200, "the overview", OVERVIEW, *ADMIN),
        )
    },
    "/api/admin/conversations/{cid}/events": {
        "get": api(
            "Any user's conversation's log after an event id (admin tokens only)",
            answers(200, "events with id > after", EVENTS, *ADMIN, BadRequest, NotFound),
            parameters=[CID, AFTER, LIMIT],
        )
    },
    "/api/admin/conversations/{cid}/stream": {
        "get": api(
            "The step being streamed now in any user's conversation (admin tokens only)",
            answers(200, "the step, or null", STREAMING, *ADMIN, NotFound),
            parameters=[CID],
        )
    },
    "/dashboard": {
        "get": page("The fleet, live, for admins (the page asks for a token)", "text/html")
    },
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": json_answer("alive", OK)}}},
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis and RabbitMQ reachable",
            "responses": {"200": json_answer("ready", OK), "503": json_answer("not ready", OK)},
        }
    },
    "/metrics": {"get": page("Prometheus metrics", "text/plain")},
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": json_answer("the OpenAPI document", {"type": "object"})},
        }
    },
    "/docs": {"get": page("This document, for people", "text/html")},
    "/": {"get": page("Links to the docs and the dashboard", "text/html")},
}


@cache
def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agent-fleet gateway",
            "version": "1",
            "description": (
                "The HTTP side of the client protocol; the live side is Socket.IO at "
                "`/socket.io` (see the README). Errors are "
                '`{"ok": false, "error": {"code", "message"}}`.'
            ),
        },
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        },
    }
