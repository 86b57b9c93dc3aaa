"""Streamed text by the protocol's rules: deltas in seq order, a reconnect's snapshot cut
to what is new, a higher epoch replacing the text, stale and logged steps dropped."""

from __future__ import annotations

from broker.events import Event, StreamFrame
from fleet.client.text import StreamedText, TextUpdate


def frame(seq: int, delta: str, epoch: int = 1, step: int = 0, turn: str = "t") -> StreamFrame:
    return StreamFrame("c", turn, epoch, step, seq, delta)


def shown(updates: list[TextUpdate | None]) -> str:
    """What an application shows, applying each update as documented."""
    text = ""
    for update in updates:
        if update is not None:
            text = update.text if update.replaced else text + update.delta
    return text


def test_deltas_are_appended_in_order_and_repeats_dropped() -> None:
    streamed = StreamedText()
    updates = [
        streamed.frame(frame(0, "Hel"), fresh=True),
        streamed.frame(frame(1, "lo "), fresh=False),
        streamed.frame(frame(1, "lo "), fresh=False),  # a repeat
        streamed.frame(frame(3, "wor"), fresh=False),  # a gateway filled a gap: seq jumps
    ]
    assert updates[2] is None
    assert shown(updates) == "Hello wor" == streamed.text("t")
    assert updates[3] == TextUpdate("c", "t", 0, 1, "wor", "Hello wor")


def test_a_reconnects_snapshot_adds_only_what_was_not_shown() -> None:
    streamed = StreamedText()
    before = [streamed.frame(frame(0, "one "), True), streamed.frame(frame(1, "two "), False)]
    # The new connection's first frame of the step: its whole text so far.
    snapshot = streamed.frame(frame(3, "one two three four "), fresh=True)
    after = streamed.frame(frame(4, "five"), fresh=False)
    assert snapshot is not None and snapshot.delta == "three four "
    assert shown([*before, snapshot, after]) == "one two three four five"
    # A snapshot no newer than what is shown adds nothing.
    assert streamed.frame(frame(4, "one two three four five"), fresh=True) is None


def test_a_higher_epoch_replaces_the_step_and_a_lower_one_is_stale() -> None:
    streamed = StreamedText()
    old = [streamed.frame(frame(0, "draft by the old owner", epoch=1), True)]
    new = streamed.frame(frame(0, "the new", epoch=2), fresh=True)
    stale = streamed.frame(frame(1, " more from the old", epoch=1), fresh=False)
    more = streamed.frame(frame(1, " owner", epoch=2), fresh=False)
    assert new is not None and new.replaced and new.text == "the new"
    assert stale is None
    assert shown([*old, new, stale, more]) == "the new owner" == streamed.text("t")


def test_logged_steps_and_ended_turns_stream_no_more() -> None:
    streamed = StreamedText()
    streamed.frame(frame(0, "answer"), True)
    logged = {"content": "answer", "turn_id": "t", "step": 0, "in_reply_to": "t"}
    streamed.event(Event(5, "c", "agent", "message", logged, 0.0))
    assert streamed.text("t") == ""
    assert streamed.frame(frame(1, " late"), fresh=False) is None
    assert streamed.frame(frame(0, "x", step=1), fresh=True) is not None  # the next step

    streamed.frame(frame(0, "half", turn="u"), True)
    aborted = {"turn_id": "u", "reason": "stopped"}
    streamed.event(Event(6, "c", "agent", "turn_aborted", aborted, 0.0))
    assert streamed.text("u") == ""
    assert streamed.frame(frame(1, " more", turn="u"), fresh=False) is None
