"""Flame graphs of the gateway and a worker under the throughput scenario (``make
profile``, i.e. ``python -m bench --only throughput --profile``).

py-spy samples each running process from outside, 100 times a second, through
the throughput scenario's window: no code change, no restart, and only threads on
the CPU are counted (an event loop waiting in ``epoll`` is idle, not a cost).
``--nonblocking``: the process is not paused to be read, which costs it nothing and
keeps a thread asleep on a lock (the worker's watchdog) out of the counts, where a
paused process shows it as busy; the price is an occasional torn stack. Two
recorders per process: one writes the SVG flame graph, the other the collapsed
stacks that ``summary.txt`` is made from (the top frames by own time, and the
fleet's own functions by time spent in them and their callees). Attaching needs the
ptrace permission (root, ``CAP_SYS_PTRACE``, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from bench.progress import say

RATE = 100  # samples a second
TOP = 15
OURS = re.compile(r"\((?:broker|gateway|workers|fleet)/")  # frames of the fleet's own code
ENTRY = re.compile(r"\(fleet/(?:__main__|cli)\.py\)|^Service\.run ")  # under every sample
LINE = re.compile(r":\d+\)$")  # "func (path.py:12)" -> "func (path.py)": one row per function


def py_spy() -> str:
    """The py-spy beside this interpreter (the bench extra installs it), or on PATH."""
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


class Profiler:
    """Records named processes for ``seconds`` once started; writes ``<name>.svg`` and
    ``summary.txt`` into ``out``, the collapsed stacks into ``scratch``."""

    def __init__(self, out: Path, scratch: Path, pids: dict[str, int], seconds: float) -> None:
        self.out = out
        self.scratch = scratch
        self.pids = pids
        self.seconds = seconds
        self._recorders: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        binary = py_spy()
        for name, pid in self.pids.items():
            for fmt, path in (
                ("flamegraph", f"{name}.svg"),
                ("raw", str(self.scratch / f"{name}.collapsed")),
            ):
                # Run as "py-spy" in ``out``: the SVG's title is this command line.
                process = await asyncio.create_subprocess_exec(
                    "py-spy",
                    "record",
                    f"--pid={pid}",
                    f"--duration={max(1, round(self.seconds))}",
                    f"--rate={RATE}",
                    "--nonblocking",
                    f"--format={fmt}",
                    f"--output={path}",
                    executable=binary,
                    cwd=self.out,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                self._recorders.append((name, process))
        say(f"profile: py-spy recording {', '.join(self.pids)} for {self.seconds:.0f} s")

    async def finish(self) -> None:
        """Wait for the recorders, then write the summary; a recorder that failed
        (no ptrace permission, say) fails the scenario with py-spy's own words."""
        for name, process in self._recorders:
            _, err = await asyncio.wait_for(process.communicate(), self.seconds + 60)
            if process.returncode != 0:
                raise RuntimeError(f"py-spy on the {name}: {err.decode().strip()[-300:]}")
        parts = [summarize(name, self.scratch / f"{name}.collapsed") for name in self.pids]
        (self.out / "summary.txt").write_text("\n".join(parts))
        graphs = ", ".join(f"{name}.svg" for name in self.pids)
        say(f"profile: wrote {graphs} and summary.txt in {self.out}")


def summarize(name: str, collapsed: Path) -> str:
    """The top frames of one process: by own time, and the fleet's functions inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [LINE.sub(")", frame) for frame in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if OURS.search(frame) and not ENTRY.search(frame):
                inclusive[frame] += samples
    lines = [f"== {name}: {total} samples at {RATE}/s (on-CPU only)", "-- own time"]
    lines += [f"{n / max(1, total):6.1%}  {frame}" for frame, n in own.most_common(TOP)]
    lines.append("-- the fleet's functions, with what they call")
    lines += [f"{n / max(1, total):6.1%}  {frame}" for frame, n in inclusive.most_common(TOP)]
    return "\n".join(lines) + "\n"
