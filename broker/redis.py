"""The Redis client every process uses, and how its replies are read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from broker.settings import ConfigError

# Commands beyond this many at once wait for a connection rather than fail: a burst
# of hundreds of actions must queue, not error, and Redis prefers few connections.
MAX_CONNECTIONS = 64
# The cluster client cannot make a command wait for a connection (it fails it), so it
# may open this many per node: a burst opens more connections instead of failing.
CLUSTER_MAX_CONNECTIONS = 1024

Word = TypeVar("Word", bound=str)

# One Redis, or a Redis Cluster (every script and transaction in one slot: broker.names).
Client: TypeAlias = Redis | RedisCluster


def connect(url: str, cluster: bool = False) -> Client:
    """A client with bounded timeouts and capped exponential retry on connection errors;
    with ``cluster``, of the Redis Cluster that ``url`` is a node of."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=CLUSTER_MAX_CONNECTIONS,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=retry,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=10,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry=retry,
        retry_on_error=[ConnectionError, TimeoutError],
    )
    return Redis.from_pool(pool)


async def require_durable(redis: Client) -> None:
    """``ConfigError`` unless Redis (every master of a cluster) writes every change to its
    append-only file before it answers (``appendonly yes``, ``appendfsync always``):
    then nothing the fleet acknowledged is lost when Redis is killed and restarted."""
    try:
        configs: list[Mapping[Any, Any]]
        if isinstance(redis, RedisCluster):
            per_node = await redis.config_get("append*", target_nodes=RedisCluster.PRIMARIES)
            # One reply per master (a dict of them), or the reply itself if only one.
            nested = all(isinstance(v, dict) for v in per_node.values())
            configs = list(cast(dict[str, Any], per_node).values()) if nested else [per_node]
        else:
            configs = [await redis.config_get("append*")]
    except ResponseError as exc:
        raise ConfigError(
            f"FLEET_REDIS_DURABLE is set but Redis's configuration cannot be read ({exc}); "
            "check appendonly yes and appendfsync always by hand, then unset it"
        ) from None
    for config in configs:
        found = {text(k): text(v) for k, v in config.items() if k is not None and v is not None}
        if (found.get("appendonly"), found.get("appendfsync")) != ("yes", "always"):
            raise ConfigError(
                "FLEET_REDIS_DURABLE is set but Redis runs with appendonly "
                f"{found.get('appendonly')!r} and appendfsync {found.get('appendfsync')!r}; "
                "start it with --appendonly yes --appendfsync always"
            )


def text(value: bytes | str) -> str:
    """A reply as ``str``: our clients return bytes, redis-py's types allow both."""
    return value.decode() if isinstance(value, bytes) else value


def one_of(value: bytes | str, words: tuple[Word, ...]) -> Word:
    """A script's reply as one of the ``Literal`` words it may return (``get_args``)."""
    word = text(value)
    for allowed in words:
        if word == allowed:
            return allowed
    raise ValueError(f"unexpected reply {word!r}; expected one of {words}")
