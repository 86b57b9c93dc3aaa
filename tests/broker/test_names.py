"""The Lua prelude spells keys exactly as ``Names`` does, on the real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from broker.names import Names, lease_value, parse_lease


def test_lease_values_parse_back() -> None:
    assert parse_lease(lease_value("host-1-ab:c", 42)) == ("host-1-ab:c", 42)


async def test_the_prelude_builds_the_same_keys(redis: Redis, names: Names) -> None:
    probe = names.lua_prelude() + (
        "local worker, epoch = parse_lease(lease_value('w:x', 7))\n"
        "return {key_meta('c'), key_clients('c'), key_running('u'), key_owns('w'),"
        " key_alive('gateway', 'g'), worker, epoch, type(now_ms())}"
    )
    keys = [k.decode() if isinstance(k, bytes) else k for k in await redis.eval(probe, 0)]
    assert keys == [
        names.meta("c"),
        names.clients("c"),
        names.running("u"),
        names.owns("w"),
        names.alive("gateway", "g"),
        "w:x",
        7,
        "number",
    ]


def test_a_script_carries_only_the_helpers_it_calls() -> None:
    names = Names("ns")
    prelude = names.lua_prelude("local owner = parse_lease(x)\nreturn key_alive('worker', owner)")
    assert "function parse_lease(" in prelude and "function key_alive(" in prelude
    assert "now_ms" not in prelude and "key_meta" not in prelude
    assert names.lua_prelude("return redis.call('GET', KEYS[1])") == ""
