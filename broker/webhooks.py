"""Webhook rules every process shares: the signature, and where a callback_url may point.

A callback_url is a user's, so it must not reach into the fleet's own network: it
must be http(s), and every address its host resolves to must be a public one (not
loopback, private, link-local, ...) unless FLEET_WEBHOOK_ALLOW_PRIVATE. It is checked
when the conversation is created and again before each delivery, which then connects
only to the addresses it checked (DNS may have changed in between, or change again).
FLEET_WEBHOOK_URL is the operator's and may point anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from broker.errors import BadRequest
from broker.settings import url_problem

SIGNATURE_HEADER = "X-Fleet-Signature"
MAX_CALLBACK_URL = 2048
DNS_TIMEOUT = 5.0


def signature(key: bytes, body: bytes) -> str:
    """The ``X-Fleet-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class AddressRefused(Exception):
    """A callback_url's host resolves to an address webhooks may not call."""


def is_public(address: str) -> bool:
    """Whether a webhook may call ``address`` (an IPv4 or IPv6 address, as text)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone says nothing
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def public_addresses(url: str) -> list[str]:
    """The addresses of ``url``'s host, all of them public; ``AddressRefused`` if any is
    not (a name with one private address among public ones is refused whole), OSError
    or TimeoutError if the name does not resolve."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    async with asyncio.timeout(DNS_TIMEOUT):
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(address):
            raise AddressRefused(f"{host} resolves to {address}")
    return addresses


async def check_callback_url(url: object, allow_private: bool) -> str:
    """A client's ``callback_url``, checked; ``BadRequest`` saying what is wrong."""
    if not isinstance(url, str):
        raise BadRequest("callback_url must be a string")
    if len(url) > MAX_CALLBACK_URL:
        raise BadRequest(f"callback_url must be at most {MAX_CALLBACK_URL} characters")
    if problem := url_problem(url):
        raise BadRequest(f"callback_url {problem}")
    if allow_private:
        return url
    try:
        await public_addresses(url)
    except AddressRefused as exc:
        raise BadRequest(
            f"callback_url must not point at a loopback, private or link-local address ({exc})"
        ) from None
    except (OSError, TimeoutError):
        raise BadRequest(f"callback_url's host {urlsplit(url).hostname} does not resolve") from None
    return url
