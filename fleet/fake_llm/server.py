"""``fleet fake-llm``: the fake served by uvicorn until SIGINT or SIGTERM (or ``stop``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from fleet.fake_llm.answer import DropConnection
from fleet.fake_llm.app import FakeApi

log = structlog.get_logger()

# On SIGTERM, answers in flight get this many seconds to finish before they are cut.
GRACE = 2


class _Uvicorn(uvicorn.Server):
    """uvicorn leaving signals to ``FakeLLM`` (its own handlers raise the signal again
    once stopped, so the process would die by SIGTERM rather than exit 0), and telling
    when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class _DeliberateDrops(logging.Filter):
    """Hides uvicorn's "Exception in ASGI application" for answers cut on purpose: by
    ``fail_after`` (``DropConnection``), or on SIGTERM once the grace is over (the
    ``chat_completion`` line says what became of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        cut = (DropConnection, asyncio.CancelledError)
        return not (record.exc_info and isinstance(record.exc_info[1], cut))


_DELIBERATE_DROPS = _DeliberateDrops()


class FakeLLM:
    """The fake LLM process: serves ``FakeApi`` until ``stop`` or, with
    ``handle_signals``, SIGINT or SIGTERM (a second one cuts the grace short)."""

    def __init__(self, host: str, port: int, pace: float) -> None:
        self.api = FakeApi(pace)
        self.url = f"http://{host}:{port}"
        self._server = _Uvicorn(
            uvicorn.Config(
                self.api.app(),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=GRACE,
            )
        )

    @property
    def listening(self) -> asyncio.Event:
        return self._server.listening

    def run(self) -> None:
        asyncio.run(self.main(handle_signals=True))

    def stop(self) -> None:
        self._server.should_exit = True

    def _signalled(self) -> None:
        self._server.force_exit = self._server.should_exit
        self.stop()

    async def main(self, handle_signals: bool = False) -> None:
        logging.getLogger("uvicorn.error").addFilter(_DELIBERATE_DROPS)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._signalled)
        serving = asyncio.ensure_future(self._server.serve())
        listening = asyncio.ensure_future(self.listening.wait())
        await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if self.listening.is_set():
            log.info("fake_llm_started", url=self.url, pace=self.api.pace)
        await serving
        log.info("fake_llm_stopped")
