"""What of a turn's streamed text one client has, so it gets the rest with no gap and
no duplicate: across its replay, lost frames, and a change of the turn's owner.

A client follows one step at a time, by (turn, epoch, step): frames of a step already
logged are dropped (the logged message holds it all); a higher epoch of a turn
replaces what came before (its new owner streams the unlogged step again), a lower
one is stale; a frame that does not follow the last one sent means some were missed,
and the rest comes from the step's snapshot in Redis.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from broker.events import StreamFrame

Verdict = Literal["send", "drop", "resync"]
Key = tuple[str, int, int]  # turn_id, epoch, step
REMEMBERED = 64  # logged steps and turn epochs kept per client


@dataclass(slots=True)
class StreamCursor:
    key: Key | None = None  # the step being followed
    seq: int = -1  # the last frame sent of it
    length: int = 0  # characters sent of it
    logged: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=REMEMBERED))
    epochs: dict[str, int] = field(default_factory=dict)  # turn_id -> highest epoch seen

    def saw_event(self, event: dict[str, Any]) -> None:
        """A logged event was sent: a logged step's (or an ended turn's) text is done."""
        data = event.get("data") or {}
        turn_id = data.get("turn_id")
        ends = "step" in data or event.get("kind") in ("turn_aborted", "error")
        if event.get("source") != "agent" or not isinstance(turn_id, str) or not ends:
            return
        step = data.get("step")
        if isinstance(step, int):
            self.logged.append((turn_id, step))
        if self.key is not None and self.key[0] == turn_id and step in (None, self.key[2]):
            self.key = None

    def verdict(self, frame: StreamFrame) -> Verdict:
        if self._stale(frame):
            return "drop"
        if (frame.turn_id, frame.epoch, frame.step) == self.key:
            if frame.seq <= self.seq:
                return "drop"
            return "send" if frame.seq == self.seq + 1 else "resync"
        return "send" if frame.seq == 0 else "resync"

    def catch_up(self, snapshot: StreamFrame | None) -> StreamFrame | None:
        """What to send of a step's snapshot: all its text for a step not followed yet,
        the part not sent yet for the one followed, nothing when stale or logged."""
        if snapshot is None or self._stale(snapshot):
            return None
        if (snapshot.turn_id, snapshot.epoch, snapshot.step) != self.key:
            return snapshot
        if snapshot.seq <= self.seq:
            return None
        return StreamFrame(
            snapshot.conversation_id,
            snapshot.turn_id,
            snapshot.epoch,
            snapshot.step,
            snapshot.seq,
            snapshot.delta[self.length :],
            snapshot.ts,
        )

    def sent(self, frame: StreamFrame) -> None:
        key = (frame.turn_id, frame.epoch, frame.step)
        if key != self.key:
            self.key, self.length = key, 0
        self.seq = frame.seq
        self.length += len(frame.delta)
        self.epochs[frame.turn_id] = frame.epoch
        if len(self.epochs) > REMEMBERED:
            del self.epochs[next(iter(self.epochs))]

    def _stale(self, frame: StreamFrame) -> bool:
        return (frame.turn_id, frame.step) in self.logged or frame.epoch < self.epochs.get(
            frame.turn_id, -1
        )
