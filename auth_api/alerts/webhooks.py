"""Webhook URLs and signatures: the SSRF policy (checked when a rule is saved and again at every connect) and HMAC.

Policy: http/https only; the host is resolved and every address it resolves to must be a public one. Loopback and
private (RFC 1918, unique-local) addresses pass only with ``MLSTACK_ALERT_WEBHOOK_ALLOW_PRIVATE=true``; link-local
(169.254.0.0/16 — cloud metadata — and fe80::/10), multicast, reserved and unspecified addresses never do. The check
runs inside the connection itself (the socket goes to the address that was checked: no DNS rebinding between check
and connect), redirects are never followed, and each call has a timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore

from auth_api.core.errors import InvalidInput

SIGNATURE_HEADER = "X-Mlstack-Signature"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """A webhook URL or address the policy refuses (never retried)."""


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sign(secret: str, body: bytes) -> str:
    """The ``X-Mlstack-Signature`` value: ``sha256=<hex HMAC-SHA256 of the body under the rule's secret>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why ``ip`` may not be called (None: it may)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("link_local", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if ip.is_loopback or ip.is_private:
        return None if allow_private else ("loopback" if ip.is_loopback else "private")
    if not ip.is_global:
        return "not-global"
    return None


def check_addresses(host: str, addresses: Iterable[str], allow_private: bool) -> None:
    """Refuse when any address ``host`` resolves to is refused (a name must not mix public and internal addresses)."""
    found = False
    for a in addresses:
        found = True
        why = address_problem(ipaddress.ip_address(a.split("%", 1)[0]), allow_private)
        if why is not None:
            raise WebhookRefused(f"{host} resolves to a {why} address ({a}), which webhooks may not call")
    if not found:
        raise WebhookRefused(f"{host} does not resolve")


def parse(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or WebhookRefused."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from None
    if u.scheme not in ("http", "https"):
        raise WebhookRefused(f"the scheme must be http or https, not {u.scheme or 'none'!r}")
    if not u.hostname:
        raise WebhookRefused("the URL names no host")
    return u.hostname, port or (443 if u.scheme == "https" else 80)


def validate_url(url: str, allow_private: bool) -> None:
    """The check on saving a rule (resolves the host: call it off the event loop); InvalidInput naming webhook_url."""
    try:
        host, port = parse(url)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise WebhookRefused(f"{host} does not resolve") from None
        check_addresses(host, (str(i[4][0]) for i in infos), allow_private)
    except WebhookRefused as exc:
        raise InvalidInput(f"webhook_url refused: {exc}", code="webhook_url_refused",
                           details={"field": "webhook_url", "reason": str(exc)}) from None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, except that it resolves the host itself, checks every address, and connects to the
    checked one (TLS still verifies the certificate against the URL's host name)."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise WebhookRefused(f"{host} does not resolve") from None
        addresses = [str(i[4][0]) for i in infos]
        check_addresses(host, addresses, self.allow_private)
        return await self._inner.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise WebhookRefused("webhooks never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
