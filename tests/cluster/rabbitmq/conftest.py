"""Tests here run against a local 3-node RabbitMQ cluster beside the shared RabbitMQ,
started once for them (10-30 s) and deleted when they are done."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from broker.settings import Settings
from fleet.rabbitmq_cluster import RabbitCluster


@pytest.fixture(scope="package")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(3)
    asyncio.run(cluster.start())
    yield cluster
    asyncio.run(cluster.close())


@pytest.fixture
def quorum_settings(settings: Settings, rabbit_cluster: RabbitCluster) -> Settings:
    """The test's settings on the local RabbitMQ cluster (every node listed), with
    quorum queues; its namespace is purged there when the test ends."""
    return settings.model_copy(update={"amqp_url": rabbit_cluster.url, "queue_type": "quorum"})
