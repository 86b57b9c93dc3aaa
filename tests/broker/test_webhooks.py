"""The webhook rules every process shares: the signature, which addresses a callback
may reach, the outbox message and the body POSTed, byte for byte."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from broker.errors import BadRequest
from broker.events import Malformed, NewEvent, Webhook, decode_webhook, encode_webhook, with_id
from broker.names import Names
from broker.webhooks import check_callback_url, is_public, signature


def test_the_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    body = b'{"delivery_id":"c:1:fleet"}'
    expected = "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature(b"key", body) == expected
    assert signature(b"key", body + b" ") != expected
    assert signature(b"other", body) != expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # link-local: cloud metadata services
        "100.64.0.1",  # shared address space (carrier NAT)
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_a_callback_may_not_reach_a_private_address(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_a_callback_may_reach_a_public_address(address: str) -> None:
    assert is_public(address)


async def test_a_callback_url_is_checked_before_anything_is_resolved() -> None:
    with pytest.raises(BadRequest, match="at most 2048 characters"):
        await check_callback_url("https://93.184.216.34/" + "x" * 2048, allow_private=False)
    with pytest.raises(BadRequest, match="must be a valid URL"):
        await check_callback_url("http://93.184.216.34:port/", allow_private=False)
    with pytest.raises(BadRequest, match="must be an http:// or https:// URL"):
        await check_callback_url("javascript:alert(1)", allow_private=True)
    private = "http://127.0.0.1:8080/hook"
    assert await check_callback_url(private, allow_private=True) == private


def webhook(target: str = "fleet") -> Webhook:
    body = NewEvent("agent", "state", {"state": "running", "turn_id": "t-1"}, ts=1.25).body("c1")
    return Webhook("c1", "alice", target, "http://h/x", 7, with_id(7, body), 100.5)  # type: ignore[arg-type]


def test_an_outbox_message_decodes_byte_for_byte() -> None:
    original = webhook("callback")
    assert decode_webhook(encode_webhook(original)) == original
    with pytest.raises(Malformed):
        decode_webhook(b'{"target": "elsewhere"}')
    with pytest.raises(Malformed):
        decode_webhook(b"not json")


def test_the_body_embeds_the_logged_event_as_is() -> None:
    hook = webhook()
    body = hook.body()
    assert body == (
        b'{"delivery_id":"c1:7:fleet","conversation_id":"c1","user":"alice","event":'
        + hook.event
        + b"}"
    )
    assert orjson.loads(body)["event"] == orjson.loads(hook.event)
    assert webhook("callback").delivery_id == "c1:7:callback"  # one per target


def test_a_conversation_keeps_its_outbox_queue() -> None:
    names = Names("ns")
    assert names.webhook_queue("3f2c0a") == names.webhook_queue("3f2c0a")
    # The same in every process (not Python's salted hash): pinned.
    assert names.webhook_queue("3f2c0a") == "ns.webhooks.3"
    assert len({names.webhook_queue(f"c{i}") for i in range(100)}) == len(names.webhook_queues)
