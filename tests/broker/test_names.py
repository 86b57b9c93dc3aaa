"""The Lua prelude spells keys exactly as ``Names`` does, on the real Redis."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.crc import key_slot

from broker.names import Names, lease_value, parse_lease


def test_lease_values_parse_back() -> None:
    assert parse_lease(lease_value("host-1-ab:c", 42)) == ("host-1-ab:c", 42)


async def test_the_prelude_builds_the_same_keys(redis: Redis, namespace: str) -> None:
    names = Names(namespace, groups=16)
    cid = names.new_conversation_id("u")
    group = names.group("u")
    probe = names.lua_prelude() + (
        "local worker, epoch = parse_lease(lease_value('w:x', 7))\n"
        "return {key_meta(ARGV[1]), key_clients(ARGV[1]), key_running('u'), key_owns('w'),"
        " key_alive('gateway', 'g'), worker, epoch, type(now_ms())}"
    )
    # In the slot of the script's first key: here, the conversation's (the user's group).
    replies = await redis.eval(probe, 1, names.meta(cid), cid)
    keys = [k.decode() if isinstance(k, bytes) else k for k in replies]
    assert keys == [
        names.meta(cid),
        names.clients(cid),
        names.running("u"),
        names.owns("w", group),
        names.alive("gateway", "g", group),
        "w:x",
        7,
        "number",
    ]


def test_a_users_conversations_share_its_slot_and_users_spread_over_the_groups() -> None:
    names = Names("ns", groups=16)
    groups = set()
    for i in range(200):
        user = f"user-{i}"
        cid = names.new_conversation_id(user)
        keys = [names.meta(cid), names.log(cid), names.running(user), names.rate(user)]
        keys += [names.pending(names.group(cid)), names.alive("worker", "w", names.group(user))]
        assert len({key_slot(key.encode()) for key in keys}) == 1
        groups.add(names.group(user))
    assert groups == set(range(16))


def test_a_script_carries_only_the_helpers_it_calls() -> None:
    names = Names("ns")
    prelude = names.lua_prelude("local owner = parse_lease(x)\nreturn key_alive('worker', owner)")
    assert "function parse_lease(" in prelude and "function key_alive(" in prelude
    assert "now_ms" not in prelude and "key_meta" not in prelude
    assert names.lua_prelude("return redis.call('GET', KEYS[1])") == ""
