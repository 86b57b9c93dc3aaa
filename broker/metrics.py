"""Prometheus metrics, one registry per role: a process exposes only its own role's
(``REGISTRIES``), plus its process and Python collectors.

Conventions: base units in the name (``_seconds``), counters end in ``_total``, labels
are few and bounded (a cause, an error code, a reason, a status, a role), never a
conversation or a user. ``deploy/prometheus/`` and ``deploy/grafana/`` use these names;
a test checks that every name they use is exported by some role.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

GATEWAY = CollectorRegistry()
WORKER = CollectorRegistry()
REAPER = CollectorRegistry()
REGISTRIES = {"gateway": GATEWAY, "worker": WORKER, "reaper": REAPER}
for _registry in REGISTRIES.values():
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)

# Latencies a person waits for: from a few ms to a minute.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Round trips to a broker or Redis.
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# --- gateways ------------------------------------------------------------------------
CONNECTED_CLIENTS = Gauge(
    "fleet_connected_clients", "Socket.IO clients connected", registry=GATEWAY
)
ACTIONS_RECEIVED = Counter(
    "fleet_actions_received_total", "Client actions received", registry=GATEWAY
)
ACTIONS_ACKNOWLEDGED = Counter(
    "fleet_actions_acknowledged_total",
    "Client actions confirmed by the broker and acked",
    registry=GATEWAY,
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "fleet_publish_confirm_seconds",
    "Publish to broker confirm, for client actions",
    buckets=ROUND_TRIP_BUCKETS,
    registry=GATEWAY,
)
EVENTS_DELIVERED = Counter(
    "fleet_events_delivered_total", "Events sent to clients", registry=GATEWAY
)
FRAMES_DELIVERED = Counter(
    "fleet_stream_frames_delivered_total", "Stream frames sent to clients", registry=GATEWAY
)
REFUSALS = Counter(
    "fleet_refusals_total",
    "Requests, connections and actions refused, by error code",
    ["code"],
    registry=GATEWAY,
)

# --- workers -----------------------------------------------------------------------
CONVERSATIONS_OWNED = Gauge(
    "fleet_conversations_owned", "Conversations this worker runs", registry=WORKER
)
CAPACITY = Gauge(
    "fleet_worker_capacity", "Conversations this worker may run at once", registry=WORKER
)
UTILIZATION = Gauge(
    "fleet_worker_utilization_ratio", "Conversations owned / capacity (0 to 1)", registry=WORKER
)
CLAIMS = Counter("fleet_claims_total", "Claims won", registry=WORKER)
FAILOVERS = Counter(
    "fleet_failovers_total", "Conversations taken over from a dead worker", registry=WORKER
)
CLAIM_LATENCY = Histogram(
    "fleet_claim_latency_seconds",
    "From a conversation being owed an owner to its claim, by cause; for cause "
    "\"failover\" from its dead owner's last heartbeat: the failover's resume time",
    ["cause"],
    buckets=WAIT_BUCKETS,
    registry=WORKER,
)
ACTION_LATENCY = Histogram(
    "fleet_action_latency_seconds",
    "From a client message's publish (its ack follows the broker's confirm) to its "
    "reply logged, across the gateway's and the worker's clocks",
    buckets=WAIT_BUCKETS,
    registry=WORKER,
)
CLAIMED_BACKLOG = Histogram(
    "fleet_claimed_queue_messages",
    "Input waiting in a conversation's queue when its owner started consuming it",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 1000),
    registry=WORKER,
)
FRAMES = Counter("fleet_stream_frames_total", "Stream frames published", registry=WORKER)
STOPS = Counter("fleet_stops_total", "Stop actions logged", registry=WORKER)
TURNS_ABORTED = Counter(
    "fleet_turns_aborted_total",
    "Turns ended before their answer, by reason (stopped, interrupted)",
    ["reason"],
    registry=WORKER,
)
FENCED_WRITES = Counter(
    "fleet_fenced_writes_refused_total", "Log writes refused: stale epoch", registry=WORKER
)
FENCES = Counter(
    "fleet_worker_fenced_total",
    "Times this worker fenced itself (stopped every loop), by reason",
    ["reason"],
    registry=WORKER,
)
HEARTBEAT_SECONDS = Histogram(
    "fleet_heartbeat_seconds",
    "Liveness renewal round trip",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    registry=WORKER,
)
TIMER_LATENESS_SECONDS = Histogram(
    "fleet_timer_lateness_seconds",
    "From a timer's due time to its owner logging it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0),
    registry=WORKER,
)
WEBHOOK_ATTEMPTS = Counter(
    "fleet_webhook_attempts_total",
    "Webhook POSTs by outcome: delivered, failed (retried later), dead_lettered",
    ["outcome"],
    registry=WORKER,
)

# --- reapers -------------------------------------------------------------------------
WORKERS_REAPED = Counter(
    "fleet_workers_reaped_total", "Dead workers whose conversations moved", registry=REAPER
)
LEADER = Gauge("fleet_reaper_leader", "1 while this reaper leads, else 0", registry=REAPER)
TIMERS_FIRED = Counter(
    "fleet_timers_fired_total", "Due timers queued to their conversations", registry=REAPER
)

# --- workers and reapers, with history in PostgreSQL ------------------------------------
HISTORY_ARCHIVED = {
    role: Counter(
        "fleet_history_archived_events_total",
        "Events moved from Redis to PostgreSQL",
        registry=registry,
    )
    for role, registry in (("worker", WORKER), ("reaper", REAPER))
}


@dataclass(frozen=True, slots=True)
class Figures:
    """The fleet as a whole, counted by the leading reaper (``workers/census.py``)."""

    live: dict[str, int]  # role -> processes whose liveness key is there
    conversations: dict[str, int]  # status -> how many
    awaiting_owner: int
    dispatch_backlog: int
    dead_letters: int


class FleetFigures(Collector):
    """Exports the last ``Figures`` while set: only the leading reaper sets them, so a
    sum over reapers counts the fleet once."""

    def __init__(self) -> None:
        self.figures: Figures | None = None  # swapped whole: read from the server's thread

    def describe(self) -> Iterator[Metric]:
        return iter(_families(None))

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        return iter(_families(figures) if figures is not None else [])


def _families(figures: Figures | None) -> list[Metric]:
    live = GaugeMetricFamily(
        "fleet_live_processes", "Processes whose liveness key is there, by role", labels=["role"]
    )
    conversations = GaugeMetricFamily(
        "fleet_conversations", "Conversations by status", labels=["status"]
    )
    awaiting = GaugeMetricFamily(
        "fleet_conversations_awaiting_owner", "Conversations owed an owner (input, or closing)"
    )
    backlog = GaugeMetricFamily(
        "fleet_dispatch_backlog", "Claim requests waiting in the dispatch queue"
    )
    dead = GaugeMetricFamily("fleet_dead_letters", "Messages in the fleet's dead-letter queues")
    if figures is not None:
        for role, count in figures.live.items():
            live.add_metric([role], count)
        for status, count in figures.conversations.items():
            conversations.add_metric([status], count)
        awaiting.add_metric([], figures.awaiting_owner)
        backlog.add_metric([], figures.dispatch_backlog)
        dead.add_metric([], figures.dead_letters)
    return [live, conversations, awaiting, backlog, dead]


FLEET = FleetFigures()
REAPER.register(FLEET)
