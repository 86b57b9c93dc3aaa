"""``fleet purge``: delete closed conversations (``--closed-before``) and long-idle
ones (``--idle-for``) for good: log, record, queue and index entries. Without flags,
``FLEET_PURGE_CLOSED_AFTER`` and ``FLEET_PURGE_IDLE_AFTER`` say what to keep.

Each conversation is purged atomically and only if it still qualifies (see
``broker.retention``); a long run says how far it got every second.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from broker.retention import PurgeKind, PurgeOutcome, Retention
from broker.settings import Settings
from fleet.ops import Ops, OpsError, run

BATCH = 500
PROGRESS_EVERY = 1.0  # seconds between progress lines
AGE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhdw]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> float:
    """Seconds in ``90``, ``45s``, ``30m``, ``12h``, ``30d`` or ``2w``."""
    found = AGE.match(value.strip())
    if found is None:
        raise ValueError(f"{value!r} is not an age (like 45s, 30m, 12h, 30d, 2w)")
    return float(found[1]) * UNITS[found[2]]


def parse_before(value: str, now: float) -> float:
    """An age before ``now``, or a date (ISO 8601, UTC unless it says otherwise), as
    epoch seconds."""
    try:
        return now - parse_age(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        message = f"{value!r} is neither an age (like 30d) nor a date (like 2026-01-31)"
        raise ValueError(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Plan:
    """Purge conversations of ``kind`` since before ``cutoff`` (epoch seconds)."""

    kind: PurgeKind
    cutoff: float


def plans(
    settings: Settings, closed_before: str | None, idle_for: str | None, now: float
) -> list[Plan]:
    """What to purge: the flags, else the retention settings; ``ValueError`` if nothing."""
    found = []
    if closed_before is not None:
        found.append(Plan("closed", parse_before(closed_before, now)))
    if idle_for is not None:
        found.append(Plan("idle", now - parse_age(idle_for)))
    if closed_before is None and idle_for is None:
        if settings.purge_closed_after:
            found.append(Plan("closed", now - settings.purge_closed_after))
        if settings.purge_idle_after:
            found.append(Plan("idle", now - settings.purge_idle_after))
    if not found:
        raise ValueError(
            "nothing to purge: give --closed-before or --idle-for, "
            "or set FLEET_PURGE_CLOSED_AFTER or FLEET_PURGE_IDLE_AFTER"
        )
    return found


@dataclass
class Progress:
    """What a run did to one kind so far, said every ``PROGRESS_EVERY`` seconds."""

    kind: PurgeKind
    total: int
    dry_run: bool
    outcomes: Counter[str] = field(default_factory=Counter)
    _said: float = field(default_factory=time.monotonic)

    def add(self, outcome: PurgeOutcome) -> None:
        self.outcomes[outcome] += 1
        if time.monotonic() - self._said >= PROGRESS_EVERY:
            self._said = time.monotonic()
            print(f"  {self.kind}: {self.line()}", flush=True)

    @property
    def done(self) -> int:
        return self.outcomes.total()

    @property
    def removed(self) -> int:
        return self.outcomes["held" if self.dry_run else "deleted"]

    def line(self) -> str:
        verb = "would be deleted" if self.dry_run else "deleted"
        kept = {k: v for k, v in self.outcomes.items() if k not in ("held", "deleted")}
        why = ", ".join(f"{count} {reason}" for reason, count in sorted(kept.items()))
        return (
            f"{self.done}/{self.total} done: {self.removed} {verb}, "
            f"{self.done - self.removed} kept" + (f" ({why})" if why else "")
        )


async def purge(ops: Ops, todo: list[Plan], dry_run: bool) -> int:
    retention = Retention(ops.redis, ops.names, await ops.broker())
    for plan in todo:
        cutoff = int(plan.cutoff * 1000)
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(plan.cutoff))
        progress = Progress(plan.kind, await retention.count(plan.kind, cutoff), dry_run)
        print(f"{plan.kind} since before {when}: {progress.total} candidate(s)", flush=True)
        for group in ops.names.all_groups:
            kept = 0  # candidates left in the index: the next batch starts after them
            while batch := await retention.candidates(plan.kind, cutoff, group, kept, BATCH):
                for cid in batch:
                    if dry_run:
                        outcome = await retention.check(cid, plan.kind, cutoff)
                    else:
                        outcome = await retention.purge(cid, plan.kind, cutoff)
                    progress.add(outcome)
                    kept += outcome != "deleted"
        print(f"{plan.kind}: {progress.line()}", flush=True)
    return 0


async def purge_conversations(
    settings: Settings, closed_before: str | None, idle_for: str | None, dry_run: bool
) -> int:
    async def act(ops: Ops) -> int:
        try:
            todo = plans(settings, closed_before, idle_for, await ops.now_ms() / 1000)
        except ValueError as exc:
            raise OpsError(str(exc)) from None
        return await purge(ops, todo, dry_run)

    return await run(settings, "purge", act)
