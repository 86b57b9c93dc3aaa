"""Connecting to a list of nodes: a dead one is skipped, and a lost connection moves to
the next node. The "nodes" are TCP proxies in front of the one local RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from aio_pika.abc import AbstractRobustConnection

from broker import connection
from broker.connection import NodesConnection
from broker.settings import ConfigError, load_settings, node_urls
from fleet.harness import free_port
from tests.chaos.servers import Proxy
from tests.conftest import AMQP_URL

RABBITMQ_PORT = 5672


def amqp(port: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def port_of(conn: AbstractRobustConnection) -> int:
    assert isinstance(conn, NodesConnection)
    return int(conn.url.port or 0)


@pytest.mark.parametrize("first", [0, 1])
async def test_a_dead_node_is_skipped(first: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever node it starts from, it ends up connected to the live one."""
    monkeypatch.setattr(random, "randrange", lambda _n: first)
    dead = free_port()
    conn = await connection.connect(f"{amqp(dead)},{AMQP_URL}", "test")
    try:
        assert port_of(conn) == RABBITMQ_PORT
        async with conn.channel():  # it works
            pass
    finally:
        await conn.close()


async def test_no_live_node_is_an_error_at_once() -> None:
    urls = ",".join(amqp(free_port()) for _ in range(3))
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await connection.connect(urls, "test")
    assert time.monotonic() - started < 5


async def test_a_lost_connection_moves_to_the_next_node() -> None:
    proxies = [Proxy(RABBITMQ_PORT), Proxy(RABBITMQ_PORT)]
    ports = [await proxy.start() for proxy in proxies]
    conn = await connection.connect(",".join(amqp(port) for port in ports), "test")
    reconnected = asyncio.Event()
    conn.reconnect_callbacks.add(lambda *_: reconnected.set())
    try:
        at = ports.index(port_of(conn))
        await proxies[at].close()  # that node is gone: refused from now on
        async with asyncio.timeout(10):
            await reconnected.wait()
        assert port_of(conn) == ports[1 - at]
        async with conn.channel():
            pass
    finally:
        await conn.close()
        for proxy in proxies:
            await proxy.close()


def test_the_url_setting_lists_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_AMQP_URL", f" {amqp(1)} , {amqp(2)},")
    listed = load_settings(os.environ)
    assert listed.amqp_url == f"{amqp(1)},{amqp(2)}"
    assert node_urls(listed.amqp_url) == [amqp(1), amqp(2)]
    monkeypatch.setenv("FLEET_AMQP_URL", "amqp://a:secret@h/,h2:5672")
    with pytest.raises(ConfigError, match=r"FLEET_AMQP_URL=.*amqp:// or amqps://") as bad:
        load_settings(os.environ)
    assert "secret" not in str(bad.value)


def test_the_queue_type_is_classic_or_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_QUEUE_TYPE", raising=False)
    assert load_settings(os.environ).queue_type == "classic"
    monkeypatch.setenv("FLEET_QUEUE_TYPE", "quorum")
    assert load_settings(os.environ).queue_type == "quorum"
    monkeypatch.setenv("FLEET_QUEUE_TYPE", "mirrored")
    with pytest.raises(ConfigError, match=r"FLEET_QUEUE_TYPE='mirrored'.*'classic' or 'quorum'"):
        load_settings(os.environ)
