"""Every Redis key and AMQP name, built from the namespace in one place.

Redis keys are spread over ``groups`` hash tags (``{<namespace>.<group>}``), one
Redis Cluster slot each. A user's keys and their conversations' keys share the user's
group (a new conversation's id is drawn to fall in it), so the per-user limit and the
conversation live together; each group keeps its own indexes (conversations owed an
owner, by status, timers due, ...) and its own copy of every process's liveness and
holdings. So every script touches one slot. With one group (one Redis) nothing is
spread. The Lua scripts get the same key builders and the lease format from
``lua_prelude``, never by spelling them again; there, keys are built in the slot of
the script's first key.
"""

from __future__ import annotations

import inspect
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# A process kind with a liveness key (holding its ``ProcessInfo``) and a deadline in
# its index.
Role = Literal["worker", "gateway", "reaper"]

# Statuses whose conversations are indexed by ``Names.by_status``.
IndexedStatus = Literal["idle", "closing", "closed"]

# A lease is "<worker_id>:<epoch>": who may write, and under which fencing token.
LEASE_SEPARATOR = ":"

# RabbitMQ's pseudo-queue for direct reply-to: a request published with this reply-to
# on the channel that consumes it is answered straight over the asker's connection,
# with no queue to declare, and nothing left behind when the asker goes.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

# The webhook outbox is this many queues, a conversation's deliveries all in one of
# them (its order). Changing it while deliveries wait would break that order.
WEBHOOK_SHARDS = 8


def valid_conversation_id(value: object) -> bool:
    """True when ``value`` can name a conversation (and so a key and a queue)."""
    return isinstance(value, str) and CONVERSATION_ID.fullmatch(value) is not None


def lease_value(worker_id: str, epoch: int) -> str:
    return f"{worker_id}{LEASE_SEPARATOR}{epoch}"


def parse_lease(value: str) -> tuple[str, int]:
    """``(worker_id, epoch)`` of a lease value; worker ids may contain the separator."""
    worker_id, _, epoch = value.rpartition(LEASE_SEPARATOR)
    return worker_id, int(epoch)


@dataclass(frozen=True, slots=True)
class Names:
    """Names of one fleet (one namespace) in Redis and RabbitMQ."""

    namespace: str
    # How many hash tags the Redis keys are spread over: fixed for a namespace's life.
    groups: int = 1

    # --- Redis: where a key lives --------------------------------------------------
    def group(self, owner: str) -> int:
        """The group of a user's or a conversation's keys."""
        return zlib.crc32(owner.encode()) % self.groups

    def group_tag(self, group: int) -> str:
        return f"{{{self.namespace}.{group}}}"

    def _in(self, group: int, key: str) -> str:
        """``key`` in the group's slot."""
        return f"{self.namespace}:{self.group_tag(group)}:{key}"

    @property
    def all_groups(self) -> range:
        return range(self.groups)

    def new_conversation_id(self, user: str) -> str:
        """A fresh id in ``user``'s group (drawn until it falls there: ``groups`` draws
        on average)."""
        group = self.group(user)
        while self.group(cid := uuid.uuid4().hex) != group:
            pass
        return cid

    # --- Redis: conversations -------------------------------------------------
    def conv(self, cid: str) -> str:
        """Prefix of the conversation's keys: meta, lease, epoch, log, once, clients."""
        return self._in(self.group(cid), f"conv:{cid}")

    def meta(self, cid: str) -> str:
        """Hash: the conversation's record (user, status, owner, created_at, active)."""
        return f"{self.conv(cid)}:meta"

    def lease(self, cid: str) -> str:
        """String: the current lease value, ``worker_id:epoch``; no TTL of its own."""
        return f"{self.conv(cid)}:lease"

    def epoch(self, cid: str) -> str:
        """Counter: the fencing token, bumped by every claim."""
        return f"{self.conv(cid)}:epoch"

    def log(self, cid: str) -> str:
        """List: the event log, one JSON event per entry, ids consecutive from 0."""
        return f"{self.conv(cid)}:log"

    def once(self, cid: str) -> str:
        """Hash of dedupe keys (action ids) to the first event id they logged."""
        return f"{self.conv(cid)}:once"

    def stream(self, cid: str) -> str:
        """Hash: the step being streamed (turn_id, epoch, step, seq) and its text so far."""
        return f"{self.conv(cid)}:stream"

    def actions(self, cid: str) -> str:
        """Hash of admitted action ids -> a digest of their content (one content per id)."""
        return f"{self.conv(cid)}:actions"

    def deleting(self, cid: str) -> str:
        """Set (with a TTL) while a passivated conversation's queue is being deleted:
        input waits until it is gone, then declares the queue again."""
        return f"{self.conv(cid)}:deleting"

    def approvals(self, cid: str) -> str:
        """Hash: open approval request id -> its options (JSON); answered ones are gone."""
        return f"{self.conv(cid)}:approvals"

    def timers(self, cid: str) -> str:
        """Hash: the agent's scheduled timer id -> ``{"at", "payload"}`` (JSON), until it
        is logged as fired or cancelled."""
        return f"{self.conv(cid)}:timers"

    def clients(self, cid: str) -> str:
        """Hash of gateway id -> connected clients of the conversation."""
        return f"{self.conv(cid)}:clients"

    def webhooks(self, cid: str) -> str:
        """Hash of webhook target -> the last event id delivered (or dead-lettered) to it:
        a copy of an earlier delivery, queued again after a crash, is skipped."""
        return f"{self.conv(cid)}:webhooks"

    def user_conversations(self, user: str) -> str:
        """Sorted set: every conversation of the user -> creation time (ms)."""
        return self._in(self.group(user), f"user:{user}:conversations")

    def running(self, user: str) -> str:
        """Sorted set: the user's running conversations -> last activity (ms)."""
        return self._in(self.group(user), f"user:{user}:running")

    def rate(self, user: str) -> str:
        """String: the user's request rate state (GCRA's theoretical arrival time, ms)."""
        return self._in(self.group(user), f"user:{user}:rate")

    # --- Redis: process liveness -----------------------------------------------
    # Each group holds a copy of a process's liveness, deadline and drain request, and
    # what it holds there, so that a script checks a holder's liveness in its own slot.
    def alive(self, role: Role, process_id: str, group: int) -> str:
        """Short-TTL liveness key of one process (its ``ProcessInfo``)."""
        return self._in(group, f"{role}:alive:{process_id}")

    def deadlines(self, role: Role, group: int) -> str:
        """Sorted set: process id -> liveness deadline (ms, Redis clock); swept by the reaper."""
        return self._in(group, f"{role}s")

    def owns(self, worker_id: str, group: int) -> str:
        """Set of the group's conversations one worker owns."""
        return self._in(group, f"worker:owns:{worker_id}")

    def connections(self, user: str) -> str:
        """Hash of gateway id -> the user's connections to it (the connection limit)."""
        return self._in(self.group(user), f"user:{user}:connections")

    def gateway_index(self, gateway_id: str, group: int) -> str:
        """Hash: what this gateway's clients hold in the group, ``c:<conversation>`` and
        ``u:<user>`` -> how many clients."""
        return self._in(group, f"gateway:index:{gateway_id}")

    def index(self, role: Role, process_id: str, group: int) -> str:
        """What a process holds in the group, forgotten with it: a worker's owns, a
        gateway's conversations; a reaper holds nothing (its liveness key stands in)."""
        if role == "worker":
            return self.owns(process_id, group)
        if role == "gateway":
            return self.gateway_index(process_id, group)
        return self.alive(role, process_id, group)

    def drain(self, role: Role, process_id: str, group: int) -> str:
        """String with a TTL: an operator asked this process to drain and exit
        (``fleet drain``); its heartbeat sees it."""
        return self._in(group, f"{role}:drain:{process_id}")

    # --- Redis: a group's conversations by status, for ops (``fleet status``, ...) ---
    def by_status(self, status: IndexedStatus, group: int) -> str:
        """Sorted set: conversations with this status -> since when (ms, Redis clock).
        Running ones are not indexed here: they are the workers' owns sets."""
        return self._in(group, f"conversations:{status}")

    def full(self, group: int) -> str:
        """Sorted set: conversations whose input was refused because their log reached
        its cap -> first refusal (ms)."""
        return self._in(group, "conversations:full")

    def pending(self, group: int) -> str:
        """Sorted set: conversations owed an owner (admitted input, or closing) -> since
        (ms); the claim removes them, the reaper asks again for those left too long."""
        return self._in(group, "pending")

    def due(self, group: int) -> str:
        """Sorted set: ``<cid> <timer_id>`` -> when it is due (ms); the reaper fires them."""
        return self._in(group, "timers")

    def archive_owed(self, group: int) -> str:
        """Sorted set: passivated or closed conversations whose log is owed a move to
        PostgreSQL -> since (ms); the move removes them, the reaper does those left too
        long (their mover died)."""
        return self._in(group, "archive")

    @property
    def reaper_leader(self) -> str:
        return f"{self.namespace}:reaper:leader"

    @property
    def history(self) -> str:
        """List: the fleet's recent history, newest first (``broker.history``)."""
        return f"{self.namespace}:history"

    # --- PostgreSQL ---------------------------------------------------------------
    @property
    def schema(self) -> str:
        """The PostgreSQL schema of this fleet's archived history: the namespace itself,
        so fleets sharing a database keep apart as they do in Redis and RabbitMQ."""
        return self.namespace

    # --- AMQP ---------------------------------------------------------------------
    @property
    def outbound_exchange(self) -> str:
        return f"{self.namespace}.out"

    @property
    def dispatch_queue(self) -> str:
        return f"{self.namespace}.dispatch"

    def conversation_queue(self, cid: str) -> str:
        return f"{self.namespace}.conv.{cid}"

    def webhook_queue(self, cid: str) -> str:
        """The webhook outbox queue of a conversation's deliveries (stable across processes)."""
        return self.webhook_queues[zlib.crc32(cid.encode()) % WEBHOOK_SHARDS]

    @property
    def webhook_queues(self) -> list[str]:
        return [f"{self.namespace}.webhooks.{shard}" for shard in range(WEBHOOK_SHARDS)]

    @property
    def webhook_dead_letters(self) -> str:
        """Deliveries that ran out of retries, or whose callback_url now resolves privately."""
        return f"{self.namespace}.webhooks.dead"

    @property
    def dead_letter_queues(self) -> tuple[str, ...]:
        """Queues of messages the fleet gave up on, counted by ``fleet status`` as dead
        letters (0 for a queue that does not exist)."""
        return (self.webhook_dead_letters,)

    # --- Lua ----------------------------------------------------------------------
    def lua_prelude(self, source: str | None = None) -> str:
        """Lua helpers a script starts with: the key builders scripts derive at run
        time (``key_meta(cid)``, ...), the lease format, the Redis clock in ms and the
        rate limit. Only those ``source`` calls (and what they call), since Redis
        defines them anew on every call of the script; all without ``source``."""
        helpers = self._lua_helpers()
        wanted = set(helpers) if source is None else set()
        pending = [source or ""]
        while pending:
            code = pending.pop()
            for name, helper in helpers.items():
                if name not in wanted and re.search(rf"\b{name}\b", code):
                    wanted.add(name)
                    pending.append(helper)
        return "".join(helper + "\n" for name, helper in helpers.items() if name in wanted)

    def _lua_helpers(self) -> dict[str, str]:
        in_slot = _InScriptSlot(self.namespace, self.groups)
        builders: dict[str, Callable[..., str]] = {
            "meta": in_slot.meta,
            "lease": in_slot.lease,
            "deleting": in_slot.deleting,
            "timers": in_slot.timers,
            "clients": in_slot.clients,
            "connections": in_slot.connections,
            "running": in_slot.running,
            "owns": in_slot.owns,
            "alive": in_slot.alive,
            "user_conversations": in_slot.user_conversations,
        }
        helpers = {"TAG": "local TAG = string.match(KEYS[1], '{[^}]*}')  -- the script's slot"}
        helpers |= {f"key_{name}": _lua_builder(name, build) for name, build in builders.items()}
        sep = LEASE_SEPARATOR
        helpers["lease_value"] = (
            f"local function lease_value(worker, epoch) return worker .. '{sep}' .. epoch end"
        )
        helpers["parse_lease"] = "\n".join(
            [
                "-- worker id and epoch (a number) of a lease value",
                "local function parse_lease(value)",
                f"  local worker, epoch = string.match(value, '^(.*){sep}(%d+)$')",
                "  return worker, tonumber(epoch)",
                "end",
            ]
        )
        helpers["now_ms"] = "\n".join(
            [
                "local function now_ms()",
                "  local t = redis.call('TIME')",
                "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)",
                "end",
            ]
        )
        helpers["gcra"] = "\n".join(
            [
                "-- Rate limit (GCRA): `burst` requests at once, then one per `interval` ms.",
                "-- 0 when a request costing `cost` is allowed (and counted), else the ms to wait.",
                "local function gcra(key, interval, burst, cost)",
                "  local now = now_ms()",
                "  local tat = math.max(tonumber(redis.call('GET', key) or 0), now)",
                "  local next_tat = math.floor(tat + interval * cost)",
                "  local wait = next_tat - now - interval * burst",
                "  if wait > 0 then return math.ceil(wait) end",
                "  redis.call('SET', key, next_tat, 'PX', next_tat - now + 1)",
                "  return 0",
                "end",
            ]
        )
        return helpers


# Stands for the hash tag in keys built for Lua: the script's own (``TAG``).
_TAG_HOLE = "\x00tag\x00"


class _InScriptSlot(Names):
    """Keys as a script builds them: in the slot of its first key, whatever the group."""

    def group_tag(self, group: int) -> str:
        return _TAG_HOLE


def _lua_builder(name: str, build: Callable[..., str]) -> str:
    """``local function key_<name>(a, b, ...)`` returning what ``build(a, b, ...)`` returns,
    in the script's slot (a ``group`` parameter has no say there, and is left out)."""
    holes = {f"\x00{i}\x00": param for i, param in enumerate(inspect.signature(build).parameters)}
    built = build(*holes)
    lua = holes | {_TAG_HOLE: "TAG"}
    parts = [
        lua.get(part, _lua_string(part)) for part in re.split("(\x00[^\x00]*\x00)", built) if part
    ]
    params = [param for hole, param in holes.items() if hole in built]
    return f"local function key_{name}({', '.join(params)}) return {' .. '.join(parts)} end"


def _lua_string(text: str) -> str:
    assert "'" not in text and "\\" not in text, f"cannot quote {text!r} for Lua"
    return f"'{text}'"
