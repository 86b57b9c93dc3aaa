"""What a scenario reports: figures beside their ceilings and targets, and its settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Stat = Literal["p50", "p99", "max"]
STATS: tuple[Stat, ...] = ("p50", "p99", "max")
_QUANTILES: dict[Stat, float] = {"p50": 0.5, "p99": 0.99, "max": 1.0}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def stat(values: Sequence[float], which: Stat) -> float:
    """The median, the 99th percentile or the maximum of a non-empty sample."""
    return percentile(values, _QUANTILES[which])


def ms(seconds: float) -> float:
    """Seconds as milliseconds, the unit of the latency figures."""
    return seconds * 1000


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for a figure's value (or its ratio to the ceiling): reported, never asserted."""

    op: Literal["<=", ">="]
    bound: float
    of: Literal["value", "ratio"] = "value"

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        subject = value if self.of == "value" else ratio
        if subject is None:
            return None
        return subject <= self.bound if self.op == "<=" else subject >= self.bound

    def describe(self, unit: str) -> str:
        sign = "≤" if self.op == "<=" else "≥"
        if self.of == "ratio":
            return f"{sign} {self.bound:.0%} of ceiling"
        return f"{sign} {self.bound:g} {unit}".rstrip()


@dataclass(slots=True)
class Figure:
    """One measured number; ``ceiling`` is what the raw broker/Redis does for the same work."""

    name: str
    value: float | None
    unit: str
    ceiling: float | None = None
    ceiling_of: str = ""
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.ceiling:
            return None
        return self.value / self.ceiling

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "ceiling": self.ceiling,
            "ceiling_of": self.ceiling_of or None,
            "ratio": self.ratio,
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met,
        }


@dataclass(slots=True)
class Result:
    """One scenario's outcome. ``series`` feed the chart and stay out of the JSON."""

    scenario: str
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)
