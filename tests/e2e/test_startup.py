"""Every process, started while Redis or RabbitMQ is down: it says which one (by URL,
without the password), honours SIGTERM while it waits, and exits non-zero once the
dependency stays down for ``FLEET_DEPENDENCY_TIMEOUT``."""

from __future__ import annotations

import signal

import pytest

from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet, free_port

ROLES = ["gateway", "worker", "reaper"]


def down(which: str) -> tuple[str, dict[str, str]]:
    """The URL (as logged) of a dependency at a port nothing listens on, and its env."""
    port = free_port()
    if which == "Redis":
        url = f"redis://127.0.0.1:{port}/0"
        return url, {"FLEET_REDIS_URL": url}
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    return f"amqp://guest:***@127.0.0.1:{port}/", {"FLEET_AMQP_URL": url}


async def start(fleet: LocalFleet, role: str, env: dict[str, str]) -> FleetProcess:
    args = [role, "--port", str(free_port())] if role == "gateway" else [role]
    process = FleetProcess(role, args, {**fleet.env, **env})
    fleet.processes.append(process)
    return await process.start()


@pytest.mark.parametrize("which", ["Redis", "RabbitMQ"])
@pytest.mark.parametrize("role", ROLES)
async def test_sigterm_while_waiting_for_a_dependency(
    settings: Settings, role: str, which: str
) -> None:
    shown, env = down(which)
    async with LocalFleet(settings) as fleet:
        process = await start(fleet, role, env)
        line = await process.wait_for("dependency_unreachable")
        assert (line["dependency"], line["url"]) == (which, shown)
        process.signal(signal.SIGTERM)
        assert await process.wait(10) == 0
        assert not any("guest:guest@" in raw for raw in process.raw)  # no password


@pytest.mark.parametrize("role", ROLES)
async def test_a_dependency_down_for_good_ends_the_process_non_zero(
    settings: Settings, role: str
) -> None:
    shown, env = down("Redis")
    async with LocalFleet(settings) as fleet:
        process = await start(fleet, role, {**env, "FLEET_DEPENDENCY_TIMEOUT": "1"})
        assert await process.wait(15) == 1
        await process.wait_for("dependency_lost")
        assert any(f"Redis at {shown} unreachable" in raw for raw in process.raw)
        # Said once at first, not on every retry.
        assert len(process.events("dependency_unreachable")) == 1


async def test_a_busy_port_is_one_json_line_and_a_non_zero_exit(settings: Settings) -> None:
    """uvicorn's own records come out as the same JSON lines as ours."""
    async with LocalFleet(settings) as fleet:
        _, url = await fleet.gateway()
        busy = url.rsplit(":", 1)[1]
        second = FleetProcess("second", ["gateway", "--port", busy], fleet.env)
        fleet.processes.append(await second.start())
        assert await second.wait(30) not in (0, None)
        line = await second.wait_for(
            "[Errno 98] error while attempting to bind on address "
            f"('127.0.0.1', {busy}): address already in use"
        )
        assert (line["logger"], line["level"], line["process"]) == (
            "uvicorn.error",
            "error",
            "gateway",
        )
        assert all(raw.startswith("{") for raw in second.raw), second.raw
