"""The Python client of a fleet: ``Conversation`` (live, reconnecting, exactly once)
and ``create_conversation``.

    async with Conversation(["http://gw-1:8000", "http://gw-2:8000"], token, cid) as chat:
        ack = await chat.send("hello")
        async for update in chat:          # Event (logged) or TextUpdate (streamed)
            ...
"""

from broker.events import Ack, Event, Refusal
from fleet.client.conversation import (
    ActionRefused,
    ClientClosed,
    Conversation,
    Unreachable,
    Update,
    ended_turns,
)
from fleet.client.http import ApiError, create_conversation
from fleet.client.link import ConnectionRefused
from fleet.client.text import TextUpdate

__all__ = [
    "Ack",
    "ActionRefused",
    "ApiError",
    "ClientClosed",
    "ConnectionRefused",
    "Conversation",
    "Event",
    "Refusal",
    "TextUpdate",
    "Unreachable",
    "Update",
    "create_conversation",
    "ended_turns",
]
