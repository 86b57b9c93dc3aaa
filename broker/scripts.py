"""The Lua scripts in ``broker/lua``, registered once per Redis client and namespace.

Each script is sent with the helpers it calls from its namespace's prelude
(``Names.lua_prelude``) in front, so no script spells a key name, the lease format
or the clock by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, cast

import structlog
from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

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


class Batch:
    """Script calls made during one turn of the event loop go to Redis as one pipeline:
    one write, one read and one pooled connection for many conversations' appends or
    admissions, instead of a round trip each. Each call still runs on its own (not a
    transaction) and gets its own reply or error. On a cluster each call goes alone."""

    def __init__(self, redis: Client) -> None:
        self.redis = redis
        self._alone = isinstance(redis, RedisCluster)  # each call goes on its own
        self._calls: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []  # EVALSHA's
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done

    async def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._alone:
            return await script(keys=keys, args=args)
        if not self._calls:  # the first of this turn: send them all at the next one
            task = asyncio.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        future = asyncio.get_running_loop().create_future()
        self._calls.append(([script.sha, len(keys), *keys, *args], future))
        reply = await future
        if isinstance(reply, NoScriptError):  # Redis forgot it: the script sends it again
            return await script(keys=keys, args=args)
        return reply

    async def _send(self) -> None:
        calls, self._calls = self._calls, []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for command, _ in calls:
                    pipe.execute_command("EVALSHA", *command)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, future in calls:
                future.cancel()
            raise
        except Exception as exc:  # the callers' error, not this task's
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(calls, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class Replicated:
    """Calls of a script whose writes must reach ``replicas`` replicas before the caller
    goes on (Redis ``WAIT``), so that a master killed right after loses none of them.
    ``WAIT`` counts the writes of its own connection: it is sent in one pipeline with
    the script, to the node that serves the script's slot."""

    def __init__(self, batch: Batch, script: AsyncScript, replicas: int) -> None:
        self.batch = batch
        self.redis = batch.redis
        self.script = script
        self.replicas = replicas
        self._short = False  # the last wait fell short: logged once until one does not

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self.replicas:
            return await self.batch.call(self.script, keys, args)
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
