"""The HTTP endpoint of workers and reapers (``FLEET_METRICS_PORT``): ``/metrics``,
their role's registry, and ``/healthz`` for a liveness probe: 200 while the process's
event loop turns, 503 once it has been stuck for ``STUCK_AFTER`` seconds. Served from
a thread, so that it answers (503) even while the loop is blocked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from broker.settings import ConfigError

# A loop silent this long will not come back by itself: let the orchestrator restart it.
STUCK_AFTER = 10.0


class Exposition:
    """``/metrics`` and ``/healthz`` on ``host:port`` (port 0: not served), until ``close``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        host: str,
        port: int,
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; a port that cannot be bound is a configuration error (exit status 2)."""
        if not self._address[1]:
            return
        registry, healthy = self._registry, self._healthy

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif self.path == "/healthz":
                    ok = healthy()
                    self._send(
                        200 if ok else 503,
                        "application/json",
                        b'{"ok":%s}' % (b"true" if ok else b"false"),
                    )
                else:
                    self._send(404, "text/plain", b"not found: /metrics or /healthz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds are not news

        host, port = self._address
        try:
            self._server = ThreadingHTTPServer(self._address, Handler)
        except OSError as exc:
            raise ConfigError(f"FLEET_METRICS_PORT={port} on {host}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
