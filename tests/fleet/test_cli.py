"""The ``fleet`` command's first impressions: configuration errors in one line naming
the variable, typos warned about, read-only commands that write nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import jwt
from redis.asyncio import Redis

from broker.amqp import Broker
from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port


def fleet(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env={**clean, "FLEET_DEPENDENCY_TIMEOUT": "3", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    return lines[0]


def test_a_bad_value_is_reported_by_its_variable_name() -> None:
    result = fleet("worker", FLEET_LIVENESS_TTL="0", FLEET_CLOSE_DELAY="soon")
    assert result.returncode == 2
    line = one_line(result)
    assert "FLEET_LIVENESS_TTL='0': Input should be greater than 0.05" in line
    assert "FLEET_CLOSE_DELAY='soon'" in line
    assert "liveness_ttl" not in line


def test_a_bad_flag_is_reported_as_the_flag() -> None:
    result = fleet("gateway", "--port", "70000")
    assert result.returncode == 2
    assert "--port=70000" in one_line(result)
    capacity = fleet("worker", "--capacity", "0")
    assert "--capacity=0: Input should be greater than or equal to 1" in one_line(capacity)
    fake = fleet("fake-llm", "--port", "70000", "--pace", "0")
    assert fake.returncode == 2
    assert "--port=70000" in one_line(fake) and "--pace=0.0" in one_line(fake)
    paced = fleet("fake-llm", FLEET_FAKE_LLM_PACE="-1")
    assert "FLEET_FAKE_LLM_PACE='-1': Input should be greater than 0" in one_line(paced)


def test_a_misspelled_variable_is_warned_about() -> None:
    result = fleet("token", "alice", FLEET_JWT_SECRET="s" * 40, FLEET_LIVENES_TTL="2")
    assert result.returncode == 0
    assert one_line(result) == (
        "fleet: warning: FLEET_LIVENES_TTL is not a setting and is ignored "
        "(did you mean FLEET_LIVENESS_TTL?)"
    )


def test_a_bad_agent_or_log_level_is_one_clear_line() -> None:
    missing = fleet("worker", FLEET_AGENT="nowhere.agents:Agent")
    assert missing.returncode == 2
    assert "FLEET_AGENT 'nowhere.agents:Agent': cannot import 'nowhere.agents'" in one_line(missing)
    absent = fleet("worker", FLEET_AGENT="workers.agents.echo:Nobody")
    assert "has no callable 'Nobody'" in one_line(absent)
    level = fleet("reaper", FLEET_LOG_LEVEL="LOUD")
    assert level.returncode == 2
    assert "FLEET_LOG_LEVEL='LOUD': Value error, must be one of DEBUG" in one_line(level)


async def test_status_of_an_unknown_namespace_declares_nothing(
    settings: Settings, redis: Redis
) -> None:
    namespace = f"{settings.namespace}-typo"
    result = await asyncio.to_thread(fleet, "status", FLEET_NAMESPACE=namespace)
    assert result.returncode == 0, result.stderr
    assert "no dispatch queue" in result.stdout
    assert "no webhook outbox" in result.stdout
    broker = Broker(settings.amqp_url, Names(namespace), name="test")
    await broker.connect(declare=False)
    try:
        assert await broker.dispatch_backlog() is None
        assert await broker.webhook_backlog() == (None, None)
    finally:
        await broker.close()
    assert [key async for key in redis.scan_iter(match=f"{namespace}*")] == []


def test_status_with_redis_down_is_one_line() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = fleet("status", FLEET_REDIS_URL=url)
    assert result.returncode == 1
    assert one_line(result).startswith(f"fleet status: Redis at {url} is unreachable: ")


def test_an_admin_token_says_so() -> None:
    secret = "s" * 40
    plain = fleet("token", "alice", FLEET_JWT_SECRET=secret)
    admin = fleet("token", "root", "--admin", FLEET_JWT_SECRET=secret)
    assert plain.returncode == admin.returncode == 0
    claims = [jwt.decode(r.stdout.strip(), secret, algorithms=["HS256"]) for r in (plain, admin)]
    assert ("admin" in claims[0], claims[1].get("admin")) == (False, True)
    assert claims[1]["sub"] == "root"


def test_webhook_settings_are_checked_at_start() -> None:
    unsigned = fleet("worker", FLEET_WEBHOOK_URL="https://hooks.example.com/fleet")
    assert unsigned.returncode == 2
    assert one_line(unsigned) == (
        "fleet: invalid configuration: FLEET_WEBHOOK_URL='https://hooks.example.com/fleet': "
        "Value error, webhooks are signed: set FLEET_WEBHOOK_SECRET too"
    )
    secret = "never-show-this-secret"
    ftp = fleet("gateway", FLEET_WEBHOOK_URL="ftp://hooks.example.com", FLEET_WEBHOOK_SECRET=secret)
    assert "FLEET_WEBHOOK_URL='ftp://hooks.example.com': Value error, must be an http://" in (
        one_line(ftp)
    )
    assert secret not in ftp.stderr
    hostless = fleet("worker", FLEET_WEBHOOK_URL="https://", FLEET_WEBHOOK_SECRET=secret)
    assert "FLEET_WEBHOOK_URL='https://': Value error, must name a host" in one_line(hostless)
    short = fleet("worker", FLEET_WEBHOOK_RETRY_FOR="0", FLEET_WEBHOOK_TIMEOUT="-1")
    assert "FLEET_WEBHOOK_RETRY_FOR='0'" in one_line(short)
    assert "FLEET_WEBHOOK_TIMEOUT='-1'" in one_line(short)


async def test_read_only_ops_commands_write_and_declare_nothing(
    settings: Settings, redis: Redis
) -> None:
    namespace = f"{settings.namespace}-typo"
    for args in (["status", "--json"], ["conversations", "--stuck"], ["inspect", "c1"]):
        result = await asyncio.to_thread(fleet, *args, FLEET_NAMESPACE=namespace)
        assert result.returncode == (1 if args[0] == "inspect" else 0), result.stderr
    broker = Broker(settings.amqp_url, Names(namespace), name="test")
    await broker.connect(declare=False)
    try:
        assert await broker.dispatch_backlog() is None
        assert await broker.queue_depth("c1") is None
    finally:
        await broker.close()
    assert [key async for key in redis.scan_iter(match=f"{namespace}*")] == []


def test_a_usage_error_is_one_line() -> None:
    result = fleet("conversations")
    assert result.returncode == 2
    assert one_line(result) == (
        "fleet conversations: the following arguments are required: --stuck "
        "(see fleet conversations --help)"
    )
