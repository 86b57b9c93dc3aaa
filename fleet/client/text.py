"""Streamed text, assembled per (turn, step) by the client protocol's rules, across
reconnects to any gateway.

On each connection the first frame of a (turn, epoch, step) holds the step's whole
text so far (a gateway sends a late joiner the step's snapshot), the following ones
deltas, their ``seq`` increasing (a jump when the gateway filled a gap: the delta
covers it). A higher epoch of a step replaces its text (the turn resumed on a new
owner); a lower one is stale. So after a reconnect the snapshot is cut to the part
not shown yet, and what an application shows has no gap and no duplicate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from broker.events import Event, StreamFrame

StepKey = tuple[str, int]  # turn_id, step
ENDED_REMEMBERED = 256  # finished steps and turns whose late frames are dropped


@dataclass(frozen=True, slots=True)
class TextUpdate:
    """New streamed text of a turn's step: append ``delta``; or, when ``replaced``, show
    ``text`` (the whole text so far) instead of what was shown of this step."""

    conversation_id: str
    turn_id: str
    step: int
    epoch: int
    delta: str
    text: str
    replaced: bool = False


@dataclass(slots=True)
class _Step:
    epoch: int
    seq: int
    text: str


class StreamedText:
    """The text of the steps being streamed, fed frames and logged events in order."""

    def __init__(self) -> None:
        self._steps: dict[StepKey, _Step] = {}
        self._ended: deque[tuple[str, int | None]] = deque(maxlen=ENDED_REMEMBERED)

    def text(self, turn_id: str, step: int = 0) -> str:
        """The text streamed so far of a step not logged yet ('' once logged)."""
        held = self._steps.get((turn_id, step))
        return held.text if held else ""

    def frame(self, frame: StreamFrame, fresh: bool) -> TextUpdate | None:
        """What ``frame`` adds; ``fresh``: the first frame of its (turn, epoch, step) on
        this connection, so it holds the whole text so far. None when it adds nothing."""
        key = (frame.turn_id, frame.step)
        if key in self._ended or (frame.turn_id, None) in self._ended:
            return None
        held = self._steps.get(key)
        if held is None or frame.epoch > held.epoch:
            self._steps[key] = _Step(frame.epoch, frame.seq, frame.delta)
            return self._update(frame, frame.delta, replaced=held is not None)
        if frame.epoch < held.epoch or frame.seq <= held.seq:
            return None  # stale, or already shown
        # Within one epoch every text is a prefix of the next: a snapshot adds its tail.
        delta = frame.delta[len(held.text) :] if fresh else frame.delta
        held.seq = frame.seq
        held.text += delta
        return self._update(frame, delta) if delta else None

    def event(self, event: Event) -> None:
        """A logged event: a logged step, or an ended turn, streams no more."""
        turn_id = event.data.get("turn_id")
        if event.source != "agent" or not isinstance(turn_id, str):
            return
        step = event.data.get("step")
        if isinstance(step, int):
            self._end((turn_id, step))
        elif event.kind in ("turn_aborted", "error"):
            self._end((turn_id, None))

    def _end(self, ended: tuple[str, int | None]) -> None:
        self._ended.append(ended)
        turn_id, step = ended
        for key in [k for k in self._steps if k[0] == turn_id and step in (None, k[1])]:
            del self._steps[key]

    def _update(self, frame: StreamFrame, delta: str, replaced: bool = False) -> TextUpdate:
        text = self._steps[(frame.turn_id, frame.step)].text
        return TextUpdate(
            frame.conversation_id, frame.turn_id, frame.step, frame.epoch, delta, text, replaced
        )
