"""``fleet healthcheck`` (the image's HEALTHCHECK) asks the /healthz of whichever role
runs beside it."""

from __future__ import annotations

from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.fleet.test_status import run_fleet


async def test_healthcheck_finds_a_worker_or_a_gateway(settings: Settings) -> None:
    worker_port, gateway_port, nothing = free_port(), free_port(), free_port()
    async with LocalFleet(settings) as fleet:
        await fleet.worker(FLEET_METRICS_PORT=str(worker_port))
        await fleet.gateway(gateway_port)
        worker = settings.model_copy(update={"metrics_port": worker_port, "port": nothing})
        gateway = settings.model_copy(update={"metrics_port": nothing, "port": gateway_port})
        assert (await run_fleet(worker, "healthcheck")).returncode == 0
        assert (await run_fleet(gateway, "healthcheck")).returncode == 0
    gone = await run_fleet(worker, "healthcheck")
    assert gone.returncode == 1
    assert gone.stderr.startswith(
        f"fleet healthcheck: nothing answered: http://127.0.0.1:{worker_port}/healthz ("
    )
    assert gone.stderr.count("\n") == 1
