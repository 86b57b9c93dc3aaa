"""Socket.IO packets are encoded by orjson, with what only the standard encoder takes
still encoded, and decoded with engineio's limits."""

from __future__ import annotations

import json

import pytest

from gateway.sockets import PacketJson


@pytest.mark.parametrize(
    "value",
    [
        ["event", {"id": 3, "data": {"content": "héllo ✓ \u2028", "n": 1.5, "ok": True}}],
        ["event", {"id": 2**70}],  # past orjson's 64 bits: the standard encoder's
        {"nested": [None, [], {}]},
    ],
)
def test_encoded_packets_decode_to_what_was_sent(value: object) -> None:
    encoded = PacketJson.dumps(value, separators=(",", ":"))
    assert json.loads(encoded) == value
    assert encoded == json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # compact


def test_decoding_keeps_engineios_limit_on_integers() -> None:
    with pytest.raises(ValueError, match="too large"):
        PacketJson.loads('{"latest_event_id": ' + "9" * 200 + "}")
