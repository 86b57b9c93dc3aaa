"""deploy/'s compose files hold together: the fleet's settings there are valid, and
name services the file defines (Docker does not run here, so nothing starts them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from broker.settings import Settings, node_urls

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEFAULTED = re.compile(r"\$\{(\w+)(?::[-?]([^}]*))?\}")


def compose(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / name).read_text()))


def fleet_settings(file: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a fleet process of ``file`` runs with (variables at their defaults)."""
    for name, value in file["x-fleet-env"].items():
        monkeypatch.setenv(name, DEFAULTED.sub(lambda m: m.group(2) or "x", str(value)))
    return Settings()


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_the_fleet_reaches_only_services_of_its_file(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = compose(name)
    settings = fleet_settings(file, monkeypatch)
    hosts = {urlsplit(url).hostname for url in node_urls(settings.amqp_url)}
    hosts |= {urlsplit(settings.redis_url).hostname}
    hosts |= {urlsplit(settings.postgres_url or "").hostname}
    assert hosts <= set(file["services"]), hosts - set(file["services"])


def test_the_clustered_fleet_runs_on_every_node_with_replicated_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = compose("docker-compose.cluster.yml")
    settings = fleet_settings(file, monkeypatch)
    assert settings.redis_cluster and settings.names.groups == 16
    assert settings.redis_wait_replicas == 1
    assert settings.queue_type == "quorum"
    rabbits = {s for s in file["services"] if s.startswith("rabbitmq-")}
    assert {urlsplit(url).hostname for url in node_urls(settings.amqp_url)} == rabbits
    # Every RabbitMQ node is in the peer list its config forms the cluster from.
    peers = set(re.findall(r"= rabbit@(\S+)", (DEPLOY / "rabbitmq" / "cluster.conf").read_text()))
    assert peers == {file["services"][s]["hostname"] for s in rabbits}
    # The one-shot cluster maker joins every Redis node, with a replica for each master.
    redises = {s for s in file["services"] if re.fullmatch(r"redis-\d", s)}
    made = " ".join(file["services"]["redis-cluster"]["command"])
    assert set(re.findall(r"getent hosts (redis-\d)", made)) == redises
    assert len(redises) == 6 and "--cluster-replicas 1" in made
