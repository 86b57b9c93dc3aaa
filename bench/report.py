"""The run's outputs: one table (stdout), ``results.json`` and ``results.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.results import Figure, Result


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _row(result: Result, figure: Figure, first: bool) -> list[str]:
    ceiling = (
        f"{number(figure.ceiling)} {figure.unit} ({figure.ceiling_of})"
        if figure.ceiling is not None
        else ""
    )
    met = {True: "yes", False: "NO", None: ""}[figure.met]
    return [
        result.scenario if first else "",
        figure.name,
        f"{number(figure.value)} {figure.unit}",
        ceiling,
        f"{figure.ratio:.2f}x" if figure.ratio is not None else "",
        figure.target.describe(figure.unit) if figure.target else "",
        met,
    ]


def table(results: Sequence[Result]) -> str:
    head = ["scenario", "figure", "value", "ceiling", "ratio", "target", "met"]
    rows = []
    for result in results:
        if result.error:
            rows.append([result.scenario, "FAILED", result.error[:60], "", "", "", ""])
            continue
        rows += [_row(result, f, i == 0) for i, f in enumerate(result.figures)]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 4}  # numbers read best right-aligned

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(r) for r in rows)])


def write_json(
    path: Path,
    results: Sequence[Result],
    machine: dict[str, Any],
    date: str,
    run: dict[str, Any],
) -> None:
    """One object per scenario; ``run`` says how the whole run went (mode, fleet env...)."""
    entries = [
        {
            "scenario": r.scenario,
            "date": date,
            "machine": machine,
            "run": run,
            "settings": r.settings,
            "figures": [f.to_json() for f in r.figures],
            "seconds": round(r.seconds, 2),
            "error": r.error,
        }
        for r in results
    ]
    path.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def write_chart(path: Path, results: Sequence[Result], round_trips: Sequence[float]) -> None:
    """Latency distributions, the failover and drain timelines, background latency
    around the signals, the start-rate curves, cost by size and latency at a fixed
    offered load over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")

    by_name = {r.scenario: r for r in results if not r.error}
    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    (cdf, timeline), (around, starts), (growth, offered) = axes

    curves = [("raw broker round trip", round_trips)]
    named = (
        ("latency", "echo, one client"),
        ("throughput", "echo under load"),
        ("load", "echo at 50% of max load"),
        ("celery", "Celery echo, one client"),
    )
    for name, label in named:
        if name in by_name:
            curves.append((label, by_name[name].series.get("latency", [])))
    for label, values in curves:
        if values:
            ordered = sorted(v * 1000 for v in values)
            quantiles = [(i + 1) / len(ordered) for i in range(len(ordered))]
            cdf.step(ordered, quantiles, where="post", label=f"{label} (n={len(ordered):,})")
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    cdf.xaxis.set_major_formatter(plain)
    cdf.xaxis.set_minor_formatter(NullFormatter())
    cdf.set_xlabel("latency (ms, log)")
    cdf.set_ylabel("fraction of actions")
    cdf.set_title("Latency distributions")
    cdf.axvline(2.0, color="grey", linestyle=":", label="target p50 2 ms")
    cdf.grid(alpha=0.3)

    for name, colour in (("failover", "tab:red"), ("drain", "tab:blue")):
        result = by_name.get(name)
        if result is None:
            continue
        resume = sorted(result.series.get("resume", []))
        claims = sorted(result.series.get("claims", []))
        if resume:
            timeline.step(
                resume,
                range(1, len(resume) + 1),
                where="post",
                color=colour,
                label=f"{name}: answering again",
            )
        if claims:
            timeline.step(
                claims,
                range(1, len(claims) + 1),
                where="post",
                color=colour,
                linestyle="--",
                label=f"{name}: claimed by the new owner",
            )
        background = result.series.get("background", [])
        if background:
            around.scatter(
                [b[0] for b in background],
                [b[1] * 1000 for b in background],
                s=4,
                alpha=0.5,
                color=colour,
                label=f"{name}: background actions",
            )
    timeline.axvline(2.0, color="tab:red", linestyle=":", label="failover target 2 s")
    timeline.axvline(0.5, color="tab:blue", linestyle=":", label="drain target 0.5 s")
    timeline.set_xlabel("seconds since the signal (SIGKILL / SIGTERM)")
    timeline.set_ylabel("conversations")
    timeline.set_title("Failover and drain timeline")
    timeline.grid(alpha=0.3)

    around.axvline(0.0, color="black", linewidth=0.8)
    around.set_yscale("log")
    around.yaxis.set_major_formatter(plain)
    around.set_xlabel("action sent, seconds since the signal")
    around.set_ylabel("reply latency (ms, log)")
    around.set_title("Background traffic around the signal")
    around.grid(alpha=0.3)

    start = by_name.get("start rate")
    if start is not None:
        for key, label in (("created", "created (201)"), ("answered", "answering")):
            times = start.series.get(key, [])
            starts.step(times, range(1, len(times) + 1), where="post", label=label)
    starts.set_xlabel("seconds since the first POST")
    starts.set_ylabel("conversations")
    starts.set_title("Start rate (two workers)")
    starts.grid(alpha=0.3)

    grown = by_name.get("growth")
    if grown is not None:
        sizes = grown.series["conversations"]
        growth.plot(sizes, grown.series["cpu_per_action"], marker="o", label="CPU per action (ms)")
        memory = growth.twinx()
        memory.plot(
            sizes,
            grown.series["memory_per_conversation"],
            marker="s",
            color="tab:orange",
            label="worker memory per conversation (KiB)",
        )
        growth.set_xticks(sizes)
        memory.set_ylim(bottom=0)
        memory.set_ylabel("KiB per conversation")
        memory.legend(fontsize=8, loc="lower right")
    growth.set_xscale("log", base=2)
    growth.xaxis.set_major_formatter(plain)
    growth.xaxis.set_minor_formatter(NullFormatter())
    growth.set_ylim(bottom=0)
    growth.set_xlabel("conversations held (100 active, the rest idle)")
    growth.set_ylabel("ms of CPU per action, every process")
    growth.set_title("Cost as conversations grow (flat is right)")
    growth.grid(alpha=0.3)

    fixed = by_name.get("load")
    if fixed is not None:
        points = fixed.series.get("timeline", [])
        offered.scatter(
            [p[0] for p in points], [p[1] * 1000 for p in points], s=4, alpha=0.5, label="actions"
        )
    offered.axhline(50.0, color="tab:red", linestyle=":", label="target p99 50 ms")
    offered.set_yscale("log")
    offered.yaxis.set_major_formatter(plain)
    offered.set_xlabel("seconds since the open loop began (action due)")
    offered.set_ylabel("latency from due time (ms, log)")
    offered.set_title("Latency at 50% of the maximum offered load")
    offered.grid(alpha=0.3)

    for ax in (cdf, timeline, around, starts, growth, offered):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
