"""``python -m bench [--quick]``: start a local fleet, run every scenario, report, clean up."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from bench import ceilings, machine, rabbit, report
from bench.context import FLEET_SETTINGS, Context
from bench.plan import Plan
from bench.progress import elapsed, say
from bench.results import Figure, Result
from bench.scenarios import (
    celery,
    completions,
    durable,
    failover,
    growth,
    latency,
    load,
    scale,
    start_rate,
    streaming,
    throughput,
    timers,
)
from bench.watch import ServiceWatch
from broker.settings import Settings, node_urls
from fleet.harness import purge

HERE = Path(__file__).resolve().parent
SCENARIOS = (
    "celery",
    "latency",
    "throughput",
    "load",
    "start",
    "streaming",
    "timers",
    "completions",
    "durable",
    "failover",
    "scale",
    "growth",
)
PURGE_TRIES = 3


def stolen_since(ticks: list[int]) -> Figure:
    """How much of the machine's CPU the hypervisor took since ``ticks``: beside each
    scenario's figures, since a virtual machine's speed drifts with it."""
    return Figure(
        "CPU stolen by the hypervisor", machine.stolen_percent(ticks, machine.cpu_ticks()), "%"
    )


async def phase(
    name: str, timeout: float, run: Callable[[], Awaitable[Result | list[Result]]]
) -> list[Result]:
    """Run one scenario, bounded; a failure is reported as that scenario's row, not fatal."""
    began, ticks = time.monotonic(), machine.cpu_ticks()
    say(f"{name}: starting")
    try:
        async with asyncio.timeout(timeout):
            outcome = await run()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        outcome = Result(name, error=f"{type(exc).__name__}: {exc}")
    results = outcome if isinstance(outcome, list) else [outcome]
    stolen = stolen_since(ticks)
    for result in results:
        result.seconds = time.monotonic() - began
        result.add(stolen)
    say(f"{name}: done in {time.monotonic() - began:.1f} s")
    return results


async def main_fleet(ctx: Context, wanted: set[str]) -> list[Result]:
    """Latency, throughput, offered load and start rate share one fleet: a gateway, two
    workers, a reaper."""
    results: list[Result] = []
    async with ctx.fleet("main", FLEET_WORKER_CAPACITY="5000") as fleet:
        _, url = await fleet.gateway()
        await asyncio.gather(fleet.worker(), fleet.worker(), fleet.reaper())
        timeout = ctx.plan.scenario_timeout
        if "latency" in wanted:
            results += await phase("latency", timeout, lambda: latency.run(ctx, url))
        if "throughput" in wanted:
            saturated = await phase("throughput", timeout, lambda: throughput.run(ctx, fleet, url))
            results += saturated
            top = saturated[0].figure("answered actions/s")
            if "load" in wanted and top is not None and top.value:
                rate = top.value  # the offered load is a fraction of it
                results += await phase("load", timeout, lambda: load.run(ctx, fleet, url, rate))
        if "start" in wanted:
            results += await phase("start rate", timeout, lambda: start_rate.run(ctx, fleet, url))
    return results


async def purge_run(prefix: str, settings: Settings) -> None:
    """Everything named ``prefix...``: what Redis records name, and what RabbitMQ lists."""
    try:
        queues = list(await rabbit.queue_memory(prefix))
        exchanges = await rabbit.exchanges(prefix)
    except (RuntimeError, OSError, TimeoutError):
        queues, exchanges = [], []  # rabbitmqctl is optional: the records name the queues
    await purge(prefix, settings.redis_url, settings.amqp_url, queues, exchanges)


async def teardown(prefix: str, settings: Settings) -> None:
    """Delete everything named ``prefix...``; retried, since a shared broker may be busy."""
    say(f"teardown: deleting every key, queue and exchange named {prefix}*")
    for attempt in range(1, PURGE_TRIES + 1):
        try:
            await purge_run(prefix, settings)
            return
        except Exception as exc:
            say(f"teardown: attempt {attempt} failed: {exc!r}"[:300])
            if attempt < PURGE_TRIES:
                await asyncio.sleep(10)
    say(f"teardown: gave up; run `python -m bench --purge {prefix}` once the servers answer")


async def run(plan: Plan, wanted: set[str], keep_logs: bool = False, profile: bool = False) -> int:
    settings = Settings.model_validate({})  # FLEET_REDIS_URL and FLEET_AMQP_URL, if set
    base = f"bench-{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{base}-"))
    redis = Redis.from_url(settings.redis_url)
    ctx = Context(plan, base, settings.redis_url, settings.amqp_url, redis, workdir)
    ctx.profile = HERE / "profiles" if profile else None
    mode = "quick" if plan.quick else "full"
    date = datetime.now(UTC).isoformat(timespec="seconds")
    say(f"{base}: {mode} run; fleet logs in {workdir}")
    # The raw ceilings, the watch and the machine's description are of one broker: the
    # first node, when FLEET_AMQP_URL lists a cluster's.
    broker_url = node_urls(settings.amqp_url)[0]
    watch = ServiceWatch(redis, broker_url)
    results: list[Result] = []
    try:
        described = await machine.describe(redis, broker_url)
        pids = {"redis": int((await redis.info("server"))["process_id"])}
        if (rabbit_pid := await rabbit.os_pid()) is not None:
            pids["rabbitmq"] = rabbit_pid
        ctx.service_pids = pids
        await watch.start()
        say("ceilings: raw broker and Redis, before any fleet runs")
        ticks = machine.cpu_ticks()
        ctx.ceilings = await ceilings.measure(
            plan, f"{base}-raw", redis, broker_url, pids.get("rabbitmq")
        )
        results.append(ctx.ceilings.result())
        results[-1].add(stolen_since(ticks))
        if "celery" in wanted:  # first: the fleet's latency and throughput rows need it
            results += await phase("celery", plan.scenario_timeout, lambda: celery.run(ctx))
        if wanted & {"latency", "throughput", "load", "start"}:
            results += await main_fleet(ctx, wanted)
        if "streaming" in wanted:
            timeout = plan.scenario_timeout
            results += await phase("streaming", timeout, lambda: streaming.run(ctx))
        if "timers" in wanted:
            timeout = plan.scenario_timeout
            results += await phase("timers", timeout, lambda: timers.run(ctx))
        if "completions" in wanted:
            timeout = plan.scenario_timeout
            results += await phase("completions", timeout, lambda: completions.run(ctx))
        if "failover" in wanted:
            results += await phase("failover", 2 * plan.scenario_timeout, lambda: failover.run(ctx))
        if "durable" in wanted:
            measured = list(results)
            timeout = 2 * plan.scenario_timeout
            results += await phase("durable", timeout, lambda: durable.run(ctx, measured))
        if "scale" in wanted:
            results += await phase("scale", 2 * plan.scenario_timeout, lambda: scale.run(ctx))
        if "growth" in wanted:
            results += await phase("growth", plan.scenario_timeout, lambda: growth.run(ctx))
        described["interruptions"] = await watch.stop()
    finally:
        await teardown(f"{base}-", settings)
        await redis.aclose()
    interruptions = described.pop("interruptions")
    run_info = {
        "mode": mode,
        "namespaces": f"{base}-*",
        "fleet_settings": FLEET_SETTINGS,
        "wall_seconds": round(elapsed(), 1),
        "load_average_at_end": machine.load_average(),
        "interruptions": interruptions,
        "profiled": profile,  # py-spy sampled the gateway and a worker in the throughput window
    }
    print(report.table(results))
    for problem in interruptions:
        print(f"WARNING: {problem}; the figures of this run are suspect")
    report.write_json(HERE / "results.json", results, described, date, run_info)
    report.write_chart(HERE / "results.png", results, ctx.ceilings.round_trips)
    failed = [r.scenario for r in results if r.error]
    if failed:
        say(f"failed: {', '.join(failed)}; fleet logs kept in {workdir}")
        return 1
    if keep_logs:
        say(f"fleet logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"wrote {HERE / 'results.json'} and {HERE / 'results.png'} in {elapsed():.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (< 2 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only these scenarios (repeatable); the ceilings always run, and "
        "load brings throughput (it offers half the maximum measured there)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record the gateway and a worker with py-spy during the throughput window "
        "(bench/profiles/)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the fleet's logs even when all went well"
    )
    parser.add_argument(
        "--purge",
        metavar="PREFIX",
        help="only delete what an interrupted run left (e.g. bench-1a2b3c-), then exit",
    )
    args = parser.parse_args(argv)
    if args.purge:
        if not args.purge.startswith("bench-"):
            parser.error("--purge takes a run's prefix, which starts with bench-")
        asyncio.run(teardown(args.purge, Settings.model_validate({})))
        return 0
    wanted = set(args.only or SCENARIOS)
    if "load" in wanted:
        wanted.add("throughput")  # the offered load is half the maximum it measures
    return asyncio.run(run(Plan.make(args.quick), wanted, args.keep_logs, args.profile))


if __name__ == "__main__":
    raise SystemExit(main())
