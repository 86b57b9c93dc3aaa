"""``fleet healthcheck``: whether the fleet process beside it (the container's) is
healthy, for Docker's HEALTHCHECK: its ``/healthz`` answers 200, a worker's or a
reaper's on FLEET_METRICS_PORT, a gateway's on FLEET_PORT (one image, every role)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from broker.settings import Settings

TIMEOUT = 2.0


def healthcheck(settings: Settings) -> int:
    """0 when the first port that answers says healthy; 1 (and why, on one line) if not."""
    tried = []
    for port in dict.fromkeys(p for p in (settings.metrics_port, settings.port) if p):
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                return (
                    0 if response.status == 200 else _unhealthy(f"{url} answered {response.status}")
                )
        except urllib.error.HTTPError as exc:  # 503: up, but stuck
            return _unhealthy(f"{url} answered {exc.code}")
        except OSError as exc:
            tried.append(f"{url} ({getattr(exc, 'reason', exc)})")
    return _unhealthy("nothing answered: " + ", ".join(tried) if tried else "no port to ask")


def _unhealthy(why: str) -> int:
    print(f"fleet healthcheck: {why}", file=sys.stderr)
    return 1
