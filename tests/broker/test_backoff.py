"""The one backoff rhythm."""

from __future__ import annotations

from broker.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(first=0.1, cap=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_after_grows_with_the_time_spent_failing() -> None:
    backoff = Backoff(first=0.1, cap=2.0)
    assert [backoff.after(t) for t in (0.0, 0.3, 1.5, 9.0)] == [0.1, 0.3, 1.5, 2.0]
