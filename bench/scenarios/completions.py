"""Completions: what the fleet adds to an owner query, beside the LLM's own time.

One client asks ``completions`` completions one after another through the fleet
(HTTP to the gateway, the query into the conversation's queue, its owner asks the
fake LLM, the answer back by direct reply-to), each paired with the same request sent
straight to the fake LLM by this process, with the code the worker sends it with (the
official SDK, streamed and joined). The fleet's overhead is the difference within each
pair; the straight request is the ceiling of the whole. Pairs alternate which of the
two goes first, so a change in the machine's load weighs on both alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

import aiohttp
from openai import AsyncOpenAI

from bench.ceilings import Ceilings
from bench.clients import create
from bench.context import Context
from bench.progress import say
from bench.results import Figure, Result, Stat, Target, ms, stat
from broker.events import ChatMessage
from fleet.harness import free_port
from workers.agents.chat import ask
from workers.agents.transcript import as_chat

MODEL = "fleet-fake"
PACE = 1_000_000.0  # words a second of the fake's replies: the LLM takes (almost) no time
WARMUP = 20


@dataclass(frozen=True, slots=True)
class Pairs:
    """Seconds per completion, through the fleet and straight to the LLM, pair by pair."""

    fleet: list[float]
    straight: list[float]

    @property
    def overheads(self) -> list[float]:
        return [f - s for f, s in zip(self.fleet, self.straight, strict=True)]


async def run(ctx: Context) -> Result:
    """Measure the pairs, then report them beside the straight request and a round trip."""
    return report(await measure(ctx), ctx.ceilings)


async def measure(ctx: Context) -> Pairs:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    env = {
        "FLEET_AGENT": "workers.agents.llm:LLMAgent",
        "FLEET_LLM_BASE_URL": base_url,
        "FLEET_LLM_MODEL": MODEL,
        "FLEET_LLM_RETRIES": "0",
    }
    async with ctx.fleet("complete", **env) as fleet:
        await fleet.fake_llm(PACE, port)
        _, url = await fleet.gateway()
        await fleet.worker()
        token = ctx.token("bench-completions")
        llm = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
        async with aiohttp.ClientSession() as http:
            cid = await create(http, url, token)
            path = f"{url}/api/conversations/{cid}/completions"
            headers = {"Authorization": f"Bearer {token}"}

            async def through_fleet(question: str) -> float:
                began = perf_counter()
                body = {"messages": [{"role": "user", "content": question}]}
                async with http.post(path, json=body, headers=headers) as response:
                    if response.status != 200:
                        raise RuntimeError(f"completion: {response.status} {await response.text()}")
                    await response.read()
                return perf_counter() - began

            async def straight(question: str) -> float:
                began = perf_counter()
                await ask(llm, MODEL, as_chat([ChatMessage("user", question)]), (), _unseen)
                return perf_counter() - began

            for i in range(WARMUP):
                await through_fleet(f"warm-up {i}")
                await straight(f"warm-up {i}")
            pairs = Pairs([], [])
            for i in range(ctx.plan.completions):
                question = f"how long does this take? ({i})"
                if i % 2:
                    pairs.straight.append(await straight(question))
                    pairs.fleet.append(await through_fleet(question))
                else:
                    pairs.fleet.append(await through_fleet(question))
                    pairs.straight.append(await straight(question))
        await llm.close()
    overhead = ms(stat(pairs.overheads, "p50"))
    say(f"completions: fleet overhead p50 {overhead:.2f} ms over {len(pairs.fleet)} pairs")
    return pairs


def _unseen(text: str) -> None:
    """The straight request's text arrives only to be joined, as the worker's does."""


def report(pairs: Pairs, ceilings: Ceilings) -> Result:
    """Completion time beside the straight request; the overhead beside a round trip."""

    def whole(which: Stat) -> Figure:
        return Figure(
            f"through the fleet {which}",
            ms(stat(pairs.fleet, which)),
            "ms",
            ms(stat(pairs.straight, which)),
            f"straight to the LLM {which}",
        )

    def overhead(which: Stat, target: Target | None = None) -> Figure:
        return Figure(
            f"fleet overhead {which}",
            ms(stat(pairs.overheads, which)),
            "ms",
            ms(stat(ceilings.round_trips, which)) if ceilings.round_trips else None,
            f"raw round trip {which}",
            target,
        )

    return Result(
        "completions",
        figures=[
            whole("p50"),
            whole("p99"),
            overhead("p50", Target("<=", 3.0)),
            overhead("p99"),
        ],
        settings={
            "pairs": len(pairs.fleet),
            "warmup_pairs": WARMUP,
            "measured": "POST /completions sent → answer read, and the same Chat "
            "Completions request sent straight to the fake LLM (streamed, joined)",
            "overhead": "per pair: through the fleet minus straight to the LLM",
            "fleet": "1 gateway, 1 worker (LLM agent), fleet fake-llm",
            "fake_llm_pace": PACE,
        },
        series={"fleet overhead": pairs.overheads},
    )
