"""The Lua scripts in ``broker/lua``, registered once per Redis client and namespace.

Each script is sent with the helpers it calls from its namespace's prelude
(``Names.lua_prelude``) in front, so no script spells a key name, the lease format
or the clock by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any, cast

import structlog
from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript

from broker.names import Names
from broker.redis import Client

_LUA = files("broker") / "lua"

log = structlog.get_logger()

# How long a write waits for its replicas (ms) before going on without them.
REPLICA_WAIT_MS = 1000


def load(redis: Client, names: Names, name: str) -> AsyncScript:
    """Register ``lua/<name>.lua``: called by SHA, re-sent only if Redis forgot it."""
    source = _LUA.joinpath(f"{name}.lua").read_text()
    return redis.register_script(names.lua_prelude(source) + source)


class Replicated:
    """Calls of a script whose writes must reach ``replicas`` replicas before the caller
    goes on (Redis ``WAIT``), so that a master killed right after loses none of them.
    ``WAIT`` counts the writes of its own connection: it is sent in one pipeline with
    the script, to the node that serves the script's slot."""

    def __init__(self, redis: Client, script: AsyncScript, replicas: int) -> None:
        self.redis = redis
        self.script = script
        self.replicas = replicas
        self._short = False  # the last wait fell short: logged once until one does not

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self.replicas:
            return await self.script(keys=keys, args=args)
        target: dict[str, Any] = {}
        if isinstance(self.redis, RedisCluster):
            target["target_nodes"] = self.redis.get_node_from_key(keys[0])
        async with self.redis.pipeline(transaction=False) as pipe:
            # The source, not its SHA: a replica that took over may never have seen it.
            pipe.eval(cast(str, self.script.script), len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas, REPLICA_WAIT_MS, **target)
            reply, acknowledged = await pipe.execute()
        short = int(acknowledged) < self.replicas
        if short != self._short:
            self._short = short
            if short:
                log.warning("replicas_behind", wanted=self.replicas, acknowledged=acknowledged)
            else:
                log.info("replicas_caught_up", replicas=self.replicas)
        return reply
