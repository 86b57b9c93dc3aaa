"""What only ``rabbitmqctl`` tells (no management plugin needed): queues, memory, pid."""

from __future__ import annotations

import asyncio

TIMEOUT = 120.0


async def rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


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
