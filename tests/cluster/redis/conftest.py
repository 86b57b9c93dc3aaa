"""Tests here run against a local Redis Cluster (three masters, three replicas),
started once for them: the fixtures ``settings``, ``names`` and ``redis`` of the
whole suite are overridden to point at it, so tests written for one Redis run here
unchanged (the test modules import them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.names import Names
from broker.redis import Client, connect
from broker.settings import Settings
from tests.cluster.redis_cluster import LocalRedisCluster
from tests.conftest import fleet_settings

CHAOS_ON_A_CLUSTER = "tests/cluster/redis/test_chaos_on_a_cluster.py"


@pytest.fixture(scope="package")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_url(redis_cluster: LocalRedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture
def settings(namespace: str, redis_url: str) -> Settings:
    # Appends wait for a replica: a master killed right after loses nothing logged.
    return fleet_settings(namespace, redis_url).model_copy(
        update={"redis_cluster": True, "redis_wait_replicas": 1}
    )


@pytest.fixture
def names(settings: Settings) -> Names:
    return settings.names


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Client]:
    client = connect(settings.redis_url, cluster=True)
    yield client
    await client.aclose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The whole chaos set on the cluster runs with ``make chaos`` (``--chaos-long``)."""
    if config.getoption("--chaos-long"):
        return
    long = [item for item in items if item.nodeid.startswith(CHAOS_ON_A_CLUSTER)]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if item not in long]
