"""The Lua scripts in ``broker/lua``, registered once per Redis client."""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_LUA = files("broker") / "lua"


def load(redis: Redis, name: str) -> AsyncScript:
    """Register ``lua/<name>.lua``: called by SHA, re-sent only if Redis forgot it."""
    return redis.register_script(_LUA.joinpath(f"{name}.lua").read_text())
