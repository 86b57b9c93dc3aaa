"""structlog setup: pretty on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def configure(level: str = "INFO", process: str = "fleet", fmt: str = "auto") -> None:
    """Configure structlog once per process; ``process`` names it in every line."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    rendering: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer()]
        if console
        else [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stderr)
            if console
            else structlog.BytesLoggerFactory(sys.stderr.buffer)
        ),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    # Libraries log through the standard library; keep only their warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
