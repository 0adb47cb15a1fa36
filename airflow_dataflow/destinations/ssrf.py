"""The SSRF guard of outgoing HTTP requests: resolve once, check every address, connect to it.

A route's webhook URL is user input that runs inside the Airflow worker's network. By default
the host is resolved, and if ANY resolved address is loopback, private, link-local, multicast,
reserved, unspecified, shared (CGNAT) or an IPv4-mapped IPv6 address (or embeds such an IPv4
address: 6to4, Teredo, NAT64), the request is refused before a connection is opened.

The request then goes to the checked address itself (``PinnedTransport``): the URL's host is
replaced by the IP, the ``Host`` header keeps the name and TLS uses it for SNI and certificate
checks (``sni_hostname``), so a DNS answer that changes between the check and the connection
(DNS rebinding) cannot redirect it. ``allow_private_networks: true`` skips the check, not the
pinning.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import httpx

from airflow_dataflow.errors import DestinationError, FatalError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class AddressRefusedError(DestinationError, FatalError):
    """The URL's host resolves to an address the guard refuses (retrying cannot help)."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    return addresses


def refusal(address: str) -> str | None:
    """Why the guard refuses ``address`` (``"loopback"``, ``"private"``, ...), else ``None``."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "IPv4-mapped IPv6"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = refusal(str(embedded))
            return f"{reason} (embedded in IPv6)" if reason else None
    return _kind(ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("private", ip.is_private),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


class AddressGuard:
    """Resolves a host and checks its addresses (unless private networks are allowed).

    Answers are kept for the guard's lifetime (one delivery), so every request of a delivery
    goes to the same checked addresses.
    """

    def __init__(self, *, allow_private_networks: bool, resolver: Resolver | None = None) -> None:
        self.allow_private_networks = allow_private_networks
        self._resolver = resolver
        self._answers: dict[tuple[str, int], list[str]] = {}

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to; raises ``AddressRefusedError`` if one is refused.

        A name that does not resolve raises ``httpx.ConnectError`` (worth retrying).
        """
        key = (host, port)
        if key not in self._answers:
            self._answers[key] = self._check(host, self._resolve(host, port))
        return self._answers[key]

    def _resolve(self, host: str, port: int) -> list[str]:
        resolver = self._resolver or system_resolver
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpx.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not addresses:
            raise httpx.ConnectError(f"{host!r} resolves to no address")
        return addresses

    def _check(self, host: str, addresses: list[str]) -> list[str]:
        if self.allow_private_networks:
            return addresses
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                shown = host if host == address else f"{host!r} (resolves to {address})"
                raise AddressRefusedError(
                    f"refused to connect to {shown}: a {reason} address. Webhooks may only "
                    f"reach public addresses unless the destination sets "
                    f"allow_private_networks: true"
                )
        return addresses


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class PinnedTransport(httpx.BaseTransport):
    """Sends each request to the guard's checked addresses of its host, in order.

    The request keeps its ``Host`` header; for https the name is the TLS SNI and the name the
    certificate is checked against. The next address is tried only when connecting fails.
    """

    def __init__(self, guard: AddressGuard, inner: httpx.BaseTransport) -> None:
        self.guard = guard
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        failure: httpx.ConnectError | None = None
        for address in self.guard.addresses(host, port):
            try:
                return self.inner.handle_request(_pinned(request, address))
            except httpx.ConnectError as exc:
                failure = exc
        assert failure is not None  # addresses() never returns an empty list
        raise failure

    def close(self) -> None:
        self.inner.close()


def _pinned(request: httpx.Request, address: str) -> httpx.Request:
    """``request`` sent to ``address``: same headers (``Host`` included), same body."""
    extensions: dict[str, Any] = dict(request.extensions)
    host = request.url.host
    if request.url.scheme == "https" and not is_ip_literal(host):
        extensions["sni_hostname"] = host
    return httpx.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,
        stream=request.stream,
        extensions=extensions,
    )
