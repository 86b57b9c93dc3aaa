"""A worker's fencing state, on a clock the test controls."""

from __future__ import annotations

from workers.fencing import Fencing

TTL = 1.0


def test_a_renewal_is_trusted_for_half_the_ttl() -> None:
    fencing = Fencing("w", TTL)
    assert not fencing.alive(0.0)
    assert fencing.renewed(sent=10.0)  # first confirmed beat: registered
    assert not fencing.renewed(sent=10.25)
    assert fencing.alive(10.7)
    assert not fencing.alive(10.75)  # sent + ttl / 2: before the key may expire at 11.25


def test_verdicts() -> None:
    fencing = Fencing("w", TTL)
    assert fencing.verdict(None, 0.0) is None  # not registered: nothing to fence
    fencing.renewed(sent=10.0)
    assert fencing.verdict(None, 10.4) is None  # no answer yet, still trusted
    assert fencing.verdict(None, 10.5) == "liveness_unconfirmed"
    assert fencing.verdict(False, 10.1) == "liveness_lapsed"
    assert fencing.verdict(True, 10.1) is None


def test_a_fenced_worker_returns_as_a_new_incarnation() -> None:
    fencing = Fencing("w", TTL)
    fencing.renewed(sent=0.0)
    assert fencing.worker_id == "w"
    assert fencing.fence() == "w"
    assert (fencing.worker_id, fencing.registered) == ("w.1", False)
    assert not fencing.alive(0.1)
    fencing.renewed(sent=1.0)
    assert fencing.fence() == "w.1"
    assert fencing.worker_id == "w.2"
