"""A worker that dies while it moves history: ``FLEET_AGENT=tests.archive_crash:EpochEcho``
runs the ``EpochEcho`` agent in a worker whose mover kills the process (SIGKILL), once
per marker in ``CRASH_MARKERS``, after a conversation's copy to PostgreSQL is committed
and before Redis is trimmed: the crash a move must survive.

Loading this module (the worker does, for its agent) puts the crash in place.
"""

from __future__ import annotations

from typing import Any

from broker.archiver import ArchiveOutcome, Archiver
from tests.agents import EpochEcho, crash_once

__all__ = ["EpochEcho"]

MARKER = "archive-before-trim"
_trim = Archiver._trim


async def _trim_or_die(self: Archiver, *args: Any) -> ArchiveOutcome:
    crash_once(MARKER)
    return await _trim(self, *args)


setattr(Archiver, "_trim", _trim_or_die)  # noqa: B010 (mypy forbids assigning a method)
