"""The Lua scripts in ``broker/lua``, registered once per Redis client and namespace.

Each script is sent with the helpers it calls from its namespace's prelude
(``Names.lua_prelude``) in front, so no script spells a key name, the lease format
or the clock by hand.
"""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from broker.names import Names

_LUA = files("broker") / "lua"


def load(redis: Redis, names: Names, name: str) -> AsyncScript:
    """Register ``lua/<name>.lua``: called by SHA, re-sent only if Redis forgot it."""
    source = _LUA.joinpath(f"{name}.lua").read_text()
    return redis.register_script(names.lua_prelude(source) + source)
