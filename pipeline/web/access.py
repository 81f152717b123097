"""Which requests the web UI answers, and who sends them (docs/behaviour.md §10.1).

- **Host check.** A page of another site can make the installer's browser send requests to the
  gateway under its own name (DNS rebinding: `evil.example` resolved to 192.168.1.10 after the
  page loaded), its cookies then its own and the same-origin rules on its side. Such a request
  carries `Host: evil.example`. Only the gateway's own names are answered: its listening
  address and the address the connection reached, `localhost`, `127.0.0.1`, `[::1]`, the box's
  host name (also as `<name>.local`) and the names of `WEB_Hosts`; any other is 421 before any
  handler runs.
- **The client** (login throttle, loopback-only bearer token, log lines) is the peer address;
  behind a reverse proxy listed in `WEB_TrustedProxies`, the nearest address of
  `X-Forwarded-For` that is not itself a trusted proxy (the right-most part is what the proxies
  wrote; the client writes only what lies left of it, so a forged header changes nothing). The
  login throttle counts an IPv6 client's failures by its /64.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
FORWARDED_FOR: Final = "X-Forwarded-For"


@functools.cache
def box_names() -> frozenset[str]:
    """The box's host name, short and as given, and its mDNS form (`<name>.local`)."""
    name = socket.gethostname().lower().rstrip(".")
    short = name.split(".")[0]
    return frozenset(n for n in (name, short, f"{short}.local") if n)


def host_name(host: str) -> str:
    """The name of a `Host` header (`name[:port]`, `[v6]:port`), lower case, without a final
    dot; "" when it is not one (a user part, a path: no browser sends them)."""
    if any(c in host for c in "@/\\?# \t"):
        return ""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return ""
    return (name or "").rstrip(".")


def _address(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_allowed(request: web.Request, bind: str, extra: Iterable[str]) -> bool:
    """The request names this gateway (or names nothing: no browser leaves `Host` out)."""
    header = request.headers.get("Host")
    if header is None:
        return True
    name = host_name(header)
    if not name:
        return False
    if name in LOCAL_NAMES or name in box_names() or \
            name in (n.lower().strip("[]").rstrip(".") for n in extra):
        return True
    address = _address(name)
    if address is None:
        return False
    if address.is_loopback or address == _address(bind):
        return True
    sockname: Any = request.transport.get_extra_info("sockname") if request.transport else None
    return isinstance(sockname, tuple) and address == _address(str(sockname[0]))


@functools.lru_cache(maxsize=8)
def networks(items: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _hop_address(hop: str) -> IpAddress | None:
    """An address of `X-Forwarded-For`, also as some proxies write it with the client's port
    (`192.0.2.1:50432`, `[2001:db8::1]:50432`): a port, new for each connection, must not make
    a new client of each."""
    if (address := _address(hop)) is not None:
        return address
    if hop.startswith("["):
        return _address(hop[1:].partition("]")[0])
    if hop.count(":") == 1:
        return _address(hop.partition(":")[0])
    return None


def _trusted(address: IpAddress | None, trusted: tuple[IpNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(request: web.Request, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the peer's, or behind a trusted proxy the one it forwarded."""
    peer = request.remote or "?"
    trusted = networks(trusted_proxies)
    if not trusted or not _trusted(_address(peer), trusted):
        return peer
    hops = [hop.strip() for header in request.headers.getall(FORWARDED_FOR, ())
            for hop in header.split(",")]
    for hop in reversed(hops):
        address = _hop_address(hop)
        if address is None:
            # Written by a trusted proxy (a client's text lies further left): a key of its own,
            # never one of another client.
            return hop[:64] or peer
        if not _trusted(address, trusted):
            return str(address)
    return peer


def behind_https(request: web.Request, trusted_proxies: tuple[str, ...]) -> bool:
    """A trusted proxy says the browser reached it over HTTPS (`X-Forwarded-Proto: https`):
    cookies are then marked `Secure`, never sent over a plain link."""
    trusted = networks(trusted_proxies)
    if not trusted or not _trusted(_address(request.remote or ""), trusted):
        return False
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https"


def throttle_key(client: str) -> str:
    """What the login throttle counts a client's failures under: its address, or for IPv6
    its /64 (one LAN host may take any address of its /64 at will, a fresh one per guess)."""
    address = _address(client)
    if isinstance(address, ipaddress.IPv6Address) and not address.is_loopback:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return client


def is_loopback(client: str) -> bool:
    address = _address(client)
    return address is not None and address.is_loopback
