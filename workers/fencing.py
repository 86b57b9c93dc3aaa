"""A worker's right to act: liveness proven recently, and which incarnation it is.

A renewal sent at ``t`` keeps the liveness key alive until at least ``t + ttl``
(Redis sets the expiry when it runs the command), so trusting it only until
``t + ttl / 2`` and checking once per heartbeat interval (``ttl / 4``) stops the
worker's loops before any other worker may take over, even when it is cut off from
Redis. A fenced worker comes back as a new incarnation, with a new id, owning nothing.
"""

from __future__ import annotations

from typing import Literal

FenceReason = Literal["liveness_lapsed", "liveness_unconfirmed", "loop_stalled"]


class Fencing:
    """Liveness as this worker knows it; pure state, timed by the caller's clock."""

    def __init__(self, base_id: str, ttl: float) -> None:
        self.base_id = base_id
        self.ttl = ttl
        self.incarnation = 0
        self.registered = False
        self.valid_until = 0.0

    @property
    def worker_id(self) -> str:
        """``base_id`` for the first incarnation, ``base_id.N`` for the N-th after it."""
        return self.base_id if not self.incarnation else f"{self.base_id}.{self.incarnation}"

    def alive(self, now: float) -> bool:
        """Whether this incarnation is surely still alive in the fleet's eyes at ``now``."""
        return self.registered and now < self.valid_until

    def renewed(self, sent: float) -> bool:
        """A heartbeat sent at ``sent`` was confirmed; True when it registered this
        incarnation (its first confirmed beat)."""
        self.valid_until = sent + self.ttl / 2
        joined = not self.registered
        self.registered = True
        return joined

    def verdict(self, renewed: bool | None, now: float) -> FenceReason | None:
        """Why to fence after a heartbeat answered ``renewed`` (None: no answer), if at all."""
        if not self.registered:
            return None
        if renewed is False:
            return "liveness_lapsed"  # the key was gone: others may own our conversations
        if renewed is None and now >= self.valid_until:
            return "liveness_unconfirmed"
        return None

    def fence(self) -> str:
        """Give up this incarnation (the reaper re-dispatches what it owned once its
        liveness key is gone). Its id, for the record."""
        previous = self.worker_id
        self.registered = False
        self.incarnation += 1
        return previous
