"""Deliberate breakages of the fleet's guarantees, each of which the suite must catch.

``make mutants`` (``python -m tests.mutants [NAME ...]``) copies the working tree to a
scratch directory once per mutant, applies the mutant there (exact text replacements
in named files: a replacement whose text is not found exactly once fails loudly, so
mutants cannot rot as the code moves), runs the tests chosen for it (``-x``: the first
failure is enough) against the copy, and prints which test caught each, or NOT CAUGHT.
It exits non-zero if any mutant was not caught. Slow (minutes): not part of
``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str  # the guarantee, as the README states it
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # test files or ids, the most pointed first


MUTANTS = (
    # --- the breakages the suite missed (issue 16) ------------------------------------
    Mutant(
        "mandatory publish",
        "an action into no queue is an error, never acknowledged and dropped",
        (
            Edit(
                "broker/amqp.py",
                "routing_key=self.names.conversation_queue(cid),\n                mandatory=True,",
                "routing_key=self.names.conversation_queue(cid),\n                mandatory=False,",
            ),
        ),
        ("tests/gateway/test_close_race.py", "tests/broker/test_amqp.py"),
    ),
    Mutant(
        "gap fill",
        "a live event ahead of a client's cursor comes after the gap, from the log",
        (
            Edit(
                "gateway/feed.py",
                'if item["id"] > client.cursor + 1:',
                "if False:",
            ),
        ),
        (
            "tests/gateway/test_feed.py",
            "tests/chaos/test_worker_faults.py::test_a_worker_killed_between_logging_and_publishing",
        ),
    ),
    Mutant(
        "claim: per-user limit",
        "the claim script enforces the user's limit too",
        (
            Edit(
                "broker/lua/claim.lua",
                "    if redis.call('ZCARD', running) >= tonumber(ARGV[3]) then"
                " return {'over_limit', 0, 0, ''} end\n",
                "",
            ),
        ),
        (
            "tests/workers/test_claims.py::test_a_stale_claim_request_over_the_users_limit_is_refused",
        ),
    ),
    Mutant(
        "claim: closed stays closed",
        "no claim ever succeeds on a closed conversation",
        (
            Edit(
                "broker/lua/claim.lua",
                "if not status or status == 'closed' or status == 'purging' then",
                "if not status or status == 'purging' then",
            ),
        ),
        (
            "tests/workers/test_claims.py::test_a_closed_conversation_is_never_claimed_again",
            "tests/chaos/test_close.py",
        ),
    ),
    # --- catches that were luck (issue 16, item 5) -----------------------------------
    Mutant(
        "replay: skip duplicates",
        "a live event the replay already sent is not sent again",
        (Edit("gateway/feed.py", 'elif item["id"] > client.cursor:', "elif True:"),),
        (
            "tests/gateway/test_feed.py::test_events_that_arrive_live_during_the_replay_are_sent_once",
            "tests/gateway/test_replay.py",
        ),
    ),
    Mutant(
        "heartbeat fences",
        "a worker whose liveness lapsed (or whose loop stalled) fences itself",
        (
            Edit(
                "workers/worker.py",
                'await self._fence("loop_stalled")',
                "pass",
            ),
            Edit(
                "workers/worker.py",
                "elif reason := self.fencing.verdict(renewed, time.monotonic()):\n"
                "                await self._fence(reason)",
                "elif reason := self.fencing.verdict(renewed, time.monotonic()):\n"
                "                pass",
            ),
        ),
        ("tests/chaos/test_worker_faults.py::test_a_paused_worker_is_fenced",),
    ),
    Mutant(
        "turns resume",
        "a turn cut short by its owner's death resumes on the next owner",
        (Edit("workers/turns.py", "found = _unfinished(since)", "found = _unfinished([])"),),
        (
            "tests/chaos/test_worker_faults.py::test_sigkill_a_worker_owning_200_conversations",
            "tests/chaos/test_worker_faults.py::test_a_crash_between_logging_and_acking_logs_once",
        ),
    ),
    # --- the breakages the suite caught already --------------------------------------
    Mutant(
        "fencing check",
        "a write under a lease that is no longer current is refused",
        (
            Edit(
                "broker/lua/append.lua",
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end",
                "if false then return {-1} end",
            ),
        ),
        ("tests/broker/test_leases.py",),
    ),
    Mutant(
        "dedupe key",
        "an input redelivered after a crash is logged once",
        (
            Edit(
                "broker/lua/append.lua",
                "local prev = redis.call('HGET', KEYS[3], ARGV[2])",
                "local prev = false",
            ),
        ),
        ("tests/broker/test_store.py", "tests/workers/test_half_done.py"),
    ),
    Mutant(
        "epoch bump",
        "every claim gives the conversation a new, greater epoch",
        (
            Edit(
                "broker/lua/claim.lua",
                "local epoch = math.max(tonumber(redis.call('GET', KEYS[3]) or 0) + 1, now_ms())",
                "local epoch = 1",
            ),
        ),
        (
            "tests/chaos/test_worker_faults.py::test_a_paused_worker_is_fenced",
            "tests/broker/test_leases.py",
        ),
    ),
    Mutant(
        "live-lease takeover",
        "a lease held by a live worker is not taken over",
        (
            Edit(
                "broker/lua/claim.lua",
                "  if redis.call('EXISTS', key_alive('worker', owner)) == 1 then"
                " return {'busy', epoch, 0, ''} end\n",
                "",
            ),
        ),
        ("tests/broker/test_leases.py",),
    ),
    Mutant(
        "publisher confirms",
        "an action is acknowledged only once the broker confirmed it",
        (
            Edit(
                "broker/amqp.py",
                "confirmed = await conn.channel(publisher_confirms=True, on_return_raises=True)",
                "confirmed = await conn.channel(publisher_confirms=False, on_return_raises=False)",
            ),
        ),
        ("tests/broker/test_amqp.py", "tests/gateway/test_close_race.py"),
    ),
    Mutant(
        "ack after log",
        "input is acknowledged to the broker only once it is logged",
        (
            Edit(
                "workers/conversation.py",
                "            async with delivery.processing():\n                with tracing.span(",
                "            await delivery.ack()\n"
                "            async with contextlib.AsyncExitStack():\n"
                "                with tracing.span(",
            ),
        ),
        ("tests/workers/test_half_done.py",),
    ),
    Mutant(
        "admission limit",
        "a user runs at most FLEET_MAX_CONVERSATIONS_PER_USER conversations",
        (
            Edit(
                "broker/lua/admit.lua",
                "if not redis.call('ZSCORE', KEYS[2], cid) and redis.call('ZCARD', KEYS[2])"
                " >= tonumber(ARGV[4]) then",
                "if false then",
            ),
        ),
        ("tests/gateway/test_limits.py",),
    ),
    Mutant(
        "token signatures",
        "only tokens signed with the fleet's key are accepted",
        (
            Edit(
                "broker/tokens.py",
                'options={"require": required},',
                'options={"require": required, "verify_signature": False},',
            ),
        ),
        ("tests/broker/test_tokens.py", "tests/gateway/test_security.py"),
    ),
    Mutant(
        "re-dispatch",
        "a dead worker's conversations are re-dispatched by the reaper",
        (
            Edit(
                "workers/reaper.py",
                '*(self.broker.request_claim(cid, "failover", last_seen) for cid in cids)',
                "*(asyncio.sleep(0) for cid in cids)",
            ),
        ),
        ("tests/chaos/test_recovery.py::test_a_standby_reaper_takes_over_within_its_lease",),
    ),
    # --- failures explain themselves (issue 16, item 6) ------------------------------
    Mutant(
        "readiness: RabbitMQ round trip",
        "/readyz is 503 while RabbitMQ does not answer",
        (Edit("gateway/app.py", "await self.broker.ping()", "pass"),),
        ("tests/gateway/test_http_api.py::test_health_and_readiness",),
    ),
    Mutant(
        "readiness: Redis round trip",
        "/readyz is 503 while Redis does not answer",
        (Edit("gateway/app.py", "await self.redis.ping()", "pass"),),
        ("tests/gateway/test_http_api.py::test_health_and_readiness",),
    ),
)


class MutantRotted(Exception):
    """A mutant's text is no longer in its file (exactly once): update the mutant."""


def scratch_copy(into: Path) -> None:
    """The working tree as it is (tracked and untracked files, not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def mutated(mutant: Mutant, tree: Path) -> dict[Path, str]:
    """The files ``mutant`` changes in ``tree``, as it changes them."""
    changed: dict[Path, str] = {}
    for edit in mutant.edits:
        path = tree / edit.path
        text = changed.get(path) or path.read_text()
        found = text.count(edit.old)
        if found != 1:
            raise MutantRotted(
                f"mutant {mutant.name!r}: {edit.path} holds its text {found} times, not once:\n"
                f"{edit.old}"
            )
        changed[path] = text.replace(edit.old, edit.new)
    return changed


def apply(mutant: Mutant, tree: Path) -> None:
    for path, text in mutated(mutant, tree).items():
        path.write_text(text)


# ``pytest -v`` names each test's outcome as soon as it has one (before its teardown).
FAILED = re.compile(r"^(tests/\S+::\S+) (?:FAILED|ERROR)")
# After the first failure, how long its teardown may take before the run is stopped.
GRACE = 60.0


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    caught_by: str | None
    seconds: float
    detail: str = ""


def run(mutant: Mutant, timeout: float) -> Verdict:
    """Apply ``mutant`` to a scratch copy and run its tests there."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleet-mutant-") as scratch:
        tree = Path(scratch)
        scratch_copy(tree)
        apply(mutant, tree)
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
        probe = [sys.executable, "-c", "import broker; print(broker.__file__)"]
        where = subprocess.run(probe, cwd=tree, env=env, capture_output=True, text=True)
        if not where.stdout.startswith(str(tree)):
            raise RuntimeError(f"the scratch copy is not what runs: {where.stdout}{where.stderr}")
        command = [
            sys.executable, "-m", "pytest", "-x", "-v", "-rfE", "-p", "no:cacheprovider",
            *mutant.tests,
        ]  # fmt: skip
        code, caught, output = asyncio.run(pytest(command, tree, env, timeout))
    seconds = time.monotonic() - started
    if caught is not None:
        why = next((ln[1:].strip() for ln in output if ln.startswith("E ")), "")
        if code is None:
            why = f"(its teardown outlasted {GRACE:g}s: stopped) {why}"
        return Verdict(mutant, caught, seconds, why[:160])
    if code == 0:
        return Verdict(mutant, None, seconds)
    # Not a test failure (a collection error, no tests found, a timeout): not a catch.
    tail = "\n".join(output[-40:])
    return Verdict(mutant, None, seconds, f"pytest exited {code}:\n{tail}")


async def pytest(
    command: list[str], tree: Path, env: dict[str, str], timeout: float
) -> tuple[int | None, str | None, list[str]]:
    """Run ``command``: its exit code (None when it had to be stopped), the first test
    that failed, and its output. Stopped (SIGKILL, with what it started) after
    ``timeout``, or ``GRACE`` seconds after its first failure."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tree,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    caught: list[tuple[str, float]] = []
    started = time.monotonic()

    async def read(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            output.append(line)
            if not caught and (found := FAILED.match(line)):
                caught.append((found.group(1), time.monotonic()))

    reader = asyncio.create_task(read(process.stdout))
    while process.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 1.0)
        now = time.monotonic()
        if process.returncode is None and (
            now - started > timeout or (caught and now - caught[0][1] > GRACE)
        ):
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            reader.cancel()
            return None, caught[0][0] if caught else None, output
    await reader
    return process.returncode, caught[0][0] if caught else None, output


def table(verdicts: list[Verdict]) -> str:
    width = max(len(v.mutant.name) for v in verdicts)
    lines = [f"{'mutant':<{width}}  {'time':>6}  caught by"]
    for v in verdicts:
        caught = v.caught_by or "NOT CAUGHT"
        lines.append(f"{v.mutant.name:<{width}}  {v.seconds:>5.0f}s  {caught}")
        if v.caught_by and v.detail:
            lines.append(f"{'':<{width}}          {v.detail}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    args = parser.parse_args()
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}: {mutant.breaks}")
        return 0
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    # Every mutant's text is checked before anything runs: a rotted one fails at once.
    for mutant in chosen:
        mutated(mutant, ROOT)
    verdicts = []
    for mutant in chosen:
        verdict = run(mutant, args.timeout)
        print(f"{mutant.name}: {verdict.caught_by or 'NOT CAUGHT'} ({verdict.seconds:.0f}s)")
        if verdict.detail:
            print(verdict.detail, flush=True)
        verdicts.append(verdict)
    print()
    print(table(verdicts))
    return 0 if all(v.caught_by for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
