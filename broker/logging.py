"""structlog setup: pretty on a terminal, JSON lines otherwise; libraries' records
(aio-pika, uvicorn, redis) rendered the same way as ours."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import orjson
import structlog

# Libraries log through the standard library; keep only their warnings, and not
# those that describe normal operation.
LIBRARY_LEVEL = logging.WARNING


class _Routine(logging.Filter):
    """Drops library warnings about what the fleet does on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        # aiormq, on each failed connection attempt: ``Dependency`` reports those.
        attempt = record.name.startswith("aiormq") and "creating transport" in record.getMessage()
        return not attempt


def configure(level: str = "INFO", process: str = "fleet", fmt: str = "auto") -> None:
    """Configure structlog once per process; ``process`` names it in every line."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    ours: list[structlog.typing.Processor]
    theirs: list[structlog.typing.Processor]
    factory: Callable[..., structlog.typing.WrappedLogger]
    if console:
        ours, theirs = [structlog.dev.ConsoleRenderer()], [structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        # Ours as bytes straight to stderr; the standard library's handler wants text.
        exc = structlog.processors.format_exc_info
        ours = [exc, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        theirs = [exc, structlog.processors.JSONRenderer(serializer=_json_text)]
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=[*shared, *ours],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *theirs],
        )
    )
    handler.addFilter(_Routine())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(LIBRARY_LEVEL)


def _json_text(obj: object, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()
