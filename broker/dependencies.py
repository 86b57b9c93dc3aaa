"""Redis and RabbitMQ as a process's dependencies: reached with backoff at startup,
watched afterwards, and named (with their URL, never a password) in every log line
and error about them. One that stays unreachable for ``dependency_timeout`` makes
the process exit non-zero, so that its supervisor notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import structlog

from broker.backoff import Backoff
from broker.settings import ConfigError

log = structlog.get_logger()

# While a dependency stays down, say so again this often (not on every retry).
REPEAT_EVERY = 10.0


def redact(url: str) -> str:
    """``url`` without its password (each of several comma-separated URLs)."""
    return ",".join(_redact_one(part.strip()) for part in url.split(","))


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def describe(error: BaseException) -> str:
    """``Type: message`` (some libraries' ``repr`` says little)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Unreachable(Exception):
    """A dependency stayed unreachable for longer than the process may wait."""


class Dependency:
    """One server this process needs, and how long it has been failing."""

    def __init__(self, name: str, url: str, timeout: float) -> None:
        self.name = name
        self.url = redact(url)
        self.timeout = timeout
        self._failing_since: float | None = None
        self._said_at = 0.0
        self._failures = 0

    def succeeded(self) -> None:
        if self._failing_since is not None:
            down = time.monotonic() - self._failing_since
            log.info(
                "dependency_reachable", dependency=self.name, url=self.url, down_s=round(down, 1)
            )
        self._failing_since = None
        self._failures = 0

    def failed(self, error: BaseException) -> None:
        """Count a failure: say so on the first and then every ``REPEAT_EVERY`` seconds;
        raise ``Unreachable`` once it has failed for longer than ``timeout``."""
        now = time.monotonic()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        down = now - self._failing_since
        if down > self.timeout:
            message = f"{self.name} at {self.url} unreachable for {down:.0f} s: {describe(error)}"
            log.error("dependency_lost", dependency=self.name, url=self.url, error=describe(error))
            raise Unreachable(message)
        if self._failures == 1 or now - self._said_at >= REPEAT_EVERY:
            self._said_at = now
            log.warning(
                "dependency_unreachable",
                dependency=self.name,
                url=self.url,
                error=describe(error),
                failures=self._failures,
                down_s=round(down, 1),
                gives_up_after_s=self.timeout,
            )

    async def reach(self, attempt: Callable[[], Awaitable[object]], stop: asyncio.Event) -> bool:
        """Run ``attempt`` until it succeeds (True) or ``stop`` is set (False), retrying
        with backoff; ``Unreachable`` once it has failed for longer than ``timeout``. A
        ``ConfigError`` is raised at once: no retry would mend it."""
        backoff = Backoff(first=0.1, cap=2.0)
        while not stop.is_set():
            try:
                await attempt()
            except ConfigError:
                raise
            except Exception as exc:
                self.failed(exc)
            else:
                self.succeeded()
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next())
        return False
