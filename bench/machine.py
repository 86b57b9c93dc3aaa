"""The machine a run measured: CPUs, memory, load, and the versions of what it talked to."""

from __future__ import annotations

import os
import platform
from typing import Any

import aio_pika
from redis.asyncio import Redis


def _first(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_ticks() -> list[int]:
    """The machine's CPU time so far, by kind: /proc/stat's ``cpu`` line (user, nice,
    system, idle, iowait, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:9]]


def stolen_percent(before: list[int], after: list[int]) -> float | None:
    """Of the CPU time between two ``cpu_ticks``, the percent the hypervisor gave to
    others (steal): a virtual machine's figures drift with it."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return 100 * spent[7] / sum(spent) if sum(spent) else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def describe(redis: Redis, amqp_url: str) -> dict[str, Any]:
    memory = _first("/proc/meminfo", "MemTotal")
    info = await redis.info("server")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        assert connection.transport is not None
        properties = connection.transport.connection.server_properties
        rabbitmq = properties.get("version")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": round(int(memory.split()[0]) / 2**20, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": info.get("redis_version"),
        "rabbitmq": rabbitmq.decode() if isinstance(rabbitmq, bytes) else rabbitmq,
        "load_average_at_start": load_average(),
    }
