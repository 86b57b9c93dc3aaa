"""Every Redis key and AMQP name, built from the namespace in one place.

Per-conversation keys carry the hash tag ``{<conversation_id>}`` so that the
scripts touching one conversation stay in one Redis Cluster slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_conversation_id(value: object) -> bool:
    """True when ``value`` can name a conversation (and so a key and a queue)."""
    return isinstance(value, str) and CONVERSATION_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Names:
    """Names of one fleet (one namespace) in Redis and RabbitMQ."""

    namespace: str

    # --- Redis: conversations -------------------------------------------------
    def conv(self, cid: str) -> str:
        """Prefix of the conversation's keys: meta, lease, epoch, log, once."""
        return f"{self.namespace}:conv:{{{cid}}}"

    def meta(self, cid: str) -> str:
        return f"{self.conv(cid)}:meta"

    def lease(self, cid: str) -> str:
        return f"{self.conv(cid)}:lease"

    def epoch(self, cid: str) -> str:
        return f"{self.conv(cid)}:epoch"

    def log(self, cid: str) -> str:
        return f"{self.conv(cid)}:log"

    def once(self, cid: str) -> str:
        """Hash of dedupe keys (action ids) to the first event id they logged."""
        return f"{self.conv(cid)}:once"

    def clients(self, cid: str) -> str:
        """Hash of gateway id -> connected clients of the conversation."""
        return f"{self.conv(cid)}:clients"

    @property
    def conv_prefix(self) -> str:
        """``conv_prefix + cid + '}:suffix'`` is a conversation key, for scripts."""
        return f"{self.namespace}:conv:{{"

    @property
    def user_prefix(self) -> str:
        return f"{self.namespace}:user:"

    def user_conversations(self, user: str) -> str:
        return f"{self.user_prefix}{user}:conversations"

    def running(self, user: str) -> str:
        """Sorted set: the user's running conversations -> last activity (ms)."""
        return f"{self.user_prefix}{user}:running"

    # --- Redis: workers ---------------------------------------------------------
    @property
    def alive_prefix(self) -> str:
        return f"{self.namespace}:worker:alive:"

    @property
    def owns_prefix(self) -> str:
        return f"{self.namespace}:worker:owns:"

    def alive(self, worker_id: str) -> str:
        """Short-TTL liveness key of one worker."""
        return self.alive_prefix + worker_id

    def owns(self, worker_id: str) -> str:
        """Set of conversations one worker owns."""
        return self.owns_prefix + worker_id

    @property
    def worker_deadlines(self) -> str:
        """Sorted set: worker id -> liveness deadline (ms, Redis clock); swept by the reaper."""
        return f"{self.namespace}:workers"

    # --- Redis: gateways -----------------------------------------------------------
    @property
    def gateway_alive_prefix(self) -> str:
        return f"{self.namespace}:gateway:alive:"

    def gateway_alive(self, gateway_id: str) -> str:
        return self.gateway_alive_prefix + gateway_id

    def gateway_conversations(self, gateway_id: str) -> str:
        """Hash: conversation id -> this gateway's connected clients of it."""
        return f"{self.namespace}:gateway:conversations:{gateway_id}"

    @property
    def gateway_deadlines(self) -> str:
        return f"{self.namespace}:gateways"

    @property
    def reaper_leader(self) -> str:
        return f"{self.namespace}:reaper:leader"

    # --- AMQP ---------------------------------------------------------------------
    @property
    def outbound_exchange(self) -> str:
        return f"{self.namespace}.out"

    @property
    def dispatch_queue(self) -> str:
        return f"{self.namespace}.dispatch"

    def conversation_queue(self, cid: str) -> str:
        return f"{self.namespace}.conv.{cid}"
