"""What every long-running fleet process shares: a unique id, and stopping on signals."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket


def process_id() -> str:
    """Host, pid and a random suffix: unique even when a pid is reused."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Service:
    """Runs ``serve`` until SIGTERM or SIGINT (``run``), or until ``stop`` is called."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self.started = asyncio.Event()  # set once it serves

    def run(self) -> None:
        asyncio.run(self.main(handle_signals=True))

    def stop(self) -> None:
        """Begin a graceful stop."""
        self._stop.set()

    async def main(self, handle_signals: bool = False) -> None:
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self.serve()

    async def serve(self) -> None:
        raise NotImplementedError
