"""Fixtures: a fresh FLEET_NAMESPACE per test on the real Redis and RabbitMQ, cleaned up after."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from broker import postgres
from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port, purge
from gateway.app import Gateway
from tests.receiver import Receiver, Receivers
from workers.reaper import Reaper
from workers.worker import Worker

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
JWT_SECRET = "test-secret-" + "x" * 32


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long", action="store_true", help="longer chaos scenarios (make chaos)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.chaos.harness import report_table

    table = report_table()
    if table:
        terminalreporter.write_sep("=", "chaos scenarios")
        terminalreporter.write_line(table)


@pytest.fixture
def chaos_long(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--chaos-long"))


@pytest.fixture
def namespace() -> str:
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
def names(settings: Settings) -> Names:
    return settings.names


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


def fleet_settings(namespace: str, redis_url: str = REDIS_URL) -> Settings:
    """The settings of a test fleet in its own namespace."""
    return Settings(
        namespace=namespace,
        redis_url=redis_url,
        amqp_url=AMQP_URL,
        jwt_secret=JWT_SECRET,
        port=free_port(),
        shutdown_grace=5.0,
        # Tests run many conversations as one user, fast; limits have tests of their own.
        max_conversations_per_user=100_000,
        max_connections_per_user=100_000,
        rate_limit=100_000.0,
        rate_burst=100_000,
    )


@pytest.fixture
def settings(namespace: str, redis_url: str) -> Settings:
    return fleet_settings(namespace, redis_url)


@pytest.fixture(autouse=True)
async def _cleanup(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    amqp_url = settings.amqp_url
    if "quorum_settings" in request.fixturenames:  # its queues are on the cluster
        amqp_url = request.getfixturevalue("rabbit_cluster").url
    await purge(settings.namespace, settings.redis_url, amqp_url, cluster=settings.redis_cluster)
    if "pg_settings" in request.fixturenames:  # last, once every process is gone
        await postgres.drop(POSTGRES_URL, [settings.names.schema])


@pytest.fixture
def pg_settings(settings: Settings) -> Settings:
    """The test's settings with history in PostgreSQL: in a schema of its own (named
    like its namespace), dropped when the test ends."""
    return settings.model_copy(update={"postgres_url": POSTGRES_URL})


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


class InProcessFleet:
    """A gateway, workers and a reaper running as tasks of the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []
        self._tasks: list[tuple[Callable[[], Any], asyncio.Task[None]]] = []

    async def start_gateway(self, port: int | None = None) -> Gateway:
        """A gateway on ``settings.port``, or on ``port`` for a second one."""
        gateway = Gateway(self.settings.model_copy(update={"port": port or self.settings.port}))
        task = asyncio.create_task(gateway.main())
        await wait_for_event(gateway.started, task)
        self._tasks.append((gateway.stop, task))
        return gateway

    async def start_worker(self, **overrides: Any) -> Worker:
        worker = Worker(self.settings.model_copy(update=overrides))
        task = asyncio.create_task(worker.main())
        await wait_for_event(worker.started, task)
        self.workers.append((worker, task))
        self._tasks.append((worker.stop, task))
        return worker

    async def start_reaper(self, **overrides: Any) -> Reaper:
        reaper = Reaper(self.settings.model_copy(update=overrides))
        task = asyncio.create_task(reaper.main())
        await wait_for_event(reaper.started, task)
        self._tasks.append((reaper.stop, task))
        return reaper

    async def close(self) -> None:
        for stop, _ in reversed(self._tasks):
            stop()
        await asyncio.gather(*(task for _, task in self._tasks))


async def wait_for_event(
    event: asyncio.Event, task: asyncio.Task[None], timeout: float = 10
) -> None:
    """Wait for ``event``, failing fast if ``task`` dies first."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait(
        {waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if task in done:
        waiter.cancel()
        task.result()
        raise AssertionError("task ended before it was ready")
    assert waiter in done, "not ready in time"


@pytest.fixture
async def fleet(settings: Settings) -> AsyncIterator[InProcessFleet]:
    running = InProcessFleet(settings)
    yield running
    await running.close()


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    """Start receivers (``await receivers(status=...)``); all stopped at the end."""
    started: list[Receiver] = []

    async def start(status: int = 200) -> Receiver:
        started.append(await Receiver(status).start())
        return started[-1]

    yield start
    await asyncio.gather(*(receiver.stop() for receiver in started))
