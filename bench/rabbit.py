"""What only ``rabbitmqctl`` tells (no management plugin needed): queues, memory, pid."""

from __future__ import annotations

from fleet.rabbitmq_cluster import run_tool

TIMEOUT = 120.0


async def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl ARGS`` of the machine's own node."""
    return await run_tool(["rabbitmqctl", *args], TIMEOUT)


async def queues(prefix: str) -> dict[str, tuple[int, int]]:
    """Queue name -> (memory of its queue process in bytes, consumers), for ``prefix...``."""
    out = await rabbitmqctl(
        "list_queues", "--quiet", "--no-table-headers", "name", "memory", "consumers"
    )
    found: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        name, memory, consumers = [*line.rsplit("\t", 2), "", ""][:3]
        if name.startswith(prefix) and memory.isdigit() and consumers.isdigit():
            found[name] = (int(memory), int(consumers))
    return found


async def queue_memory(prefix: str) -> dict[str, int]:
    """Queue name -> memory of its queue process (bytes), for queues named ``prefix...``."""
    return {name: memory for name, (memory, _) in (await queues(prefix)).items()}


async def exchanges(prefix: str) -> list[str]:
    out = await rabbitmqctl("list_exchanges", "--quiet", "--no-table-headers", "name")
    return [name for name in out.split() if name.startswith(prefix)]


async def total_memory() -> int:
    """Bytes the broker's Erlang VM has allocated."""
    return int((await rabbitmqctl("eval", "erlang:memory(total).")).strip())


async def os_pid() -> int | None:
    try:
        return int((await rabbitmqctl("eval", "os:getpid().")).strip().strip('"'))
    except (RuntimeError, ValueError, OSError):
        return None
