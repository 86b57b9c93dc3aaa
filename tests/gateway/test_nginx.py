"""Through the shipped load balancer (``deploy/nginx.conf``, Debian's nginx) with two
gateways behind it: every transport, live bursts and replays."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.settings import Settings
from fleet.harness import free_port, http_ready
from tests.conftest import InProcessFleet
from tests.gateway.test_transports import TRANSPORTS, burst_then_replay
from tests.support import create_conversation, token

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def balancer_conf(listen: int, gateways: list[int]) -> str:
    """The shipped configuration, listening on ``listen``, balancing ``gateways``."""
    text = CONF.read_text()
    servers = " ".join(f"server 127.0.0.1:{port};" for port in gateways)
    text, upstreams = re.subn(r"server gateway:8000;", servers, text)
    text, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", text)
    assert (upstreams, listens) == (2, 1), "deploy/nginx.conf changed shape; update this test"
    return text


@pytest.fixture
async def balancer(fleet: InProcessFleet, settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """nginx with the shipped configuration in front of two gateways; its URL."""
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if nginx is None:
        pytest.fail(
            "tests/gateway/test_nginx.py needs nginx (apt-get install nginx)", pytrace=False
        )
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:Burst"})
    second = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(second)
    await fleet.start_worker()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(balancer_conf(port, [settings.port, second]))
    process = await asyncio.create_subprocess_exec(
        nginx,
        "-p",
        str(tmp_path),
        "-c",
        str(conf),
        "-g",
        f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;",
    )
    try:
        async with asyncio.timeout(10):
            while not await http_ready("127.0.0.1", port):
                assert process.returncode is None, (tmp_path / "error.log").read_text()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


@pytest.mark.parametrize("transports", TRANSPORTS, ids="+".join)
async def test_every_transport_through_the_shipped_nginx(
    balancer: str, settings: Settings, transports: tuple[str, ...]
) -> None:
    bearer = token(settings, "alice")
    cid = await create_conversation(balancer, bearer)
    await burst_then_replay(balancer, bearer, cid, transports)
