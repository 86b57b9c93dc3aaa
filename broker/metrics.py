"""Prometheus metrics of every fleet process (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Gateways
CONNECTED_CLIENTS = Gauge("fleet_connected_clients", "Socket.IO clients connected")
ACTIONS_RECEIVED = Counter("fleet_actions_received_total", "Client actions received")
ACTIONS_ACKNOWLEDGED = Counter(
    "fleet_actions_acknowledged_total", "Client actions confirmed by the broker and acked"
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "fleet_publish_confirm_seconds",
    "Publish to broker confirm, for client actions",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENTS_DELIVERED = Counter("fleet_events_delivered_total", "Events sent to clients")

# Workers
CONVERSATIONS_OWNED = Gauge("fleet_conversations_owned", "Conversations this worker runs")
CLAIMS = Counter("fleet_claims_total", "Claims won")
TAKEOVERS = Counter("fleet_takeovers_total", "Claims that took over a dead worker's lease")
FENCED_WRITES = Counter("fleet_fenced_writes_refused_total", "Log writes refused: stale epoch")
HEARTBEAT_SECONDS = Histogram(
    "fleet_heartbeat_seconds",
    "Liveness renewal round trip",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
TIMER_LATENESS_SECONDS = Histogram(
    "fleet_timer_lateness_seconds",
    "From a timer's due time to its owner logging it",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0),
)

# Reapers
TIMERS_FIRED = Counter("fleet_timers_fired_total", "Due timers queued to their conversations")
WORKERS_REAPED = Counter("fleet_workers_reaped_total", "Dead workers whose conversations moved")
# Workers and reapers, with history in PostgreSQL
HISTORY_ARCHIVED = Counter(
    "fleet_history_archived_events_total", "Events moved from Redis to PostgreSQL"
)


def serve(host: str, port: int) -> None:
    """Expose this process's metrics on ``host:port`` (port 0: not at all)."""
    if port:
        start_http_server(port, addr=host)
