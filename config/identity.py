"""The gateway's uid from the host's primary MAC address (docs/formats.md §2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

UID_PATTERN: Final = re.compile(r"[A-Za-z0-9-]{1,32}")
_NET: Final = Path("/sys/class/net")
_ROUTES: Final = Path("/proc/net/route")
_MAC: Final = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def uid_from_mac(mac: str) -> str:
    """`00:8D:00:00:BD:E4` -> `WPM00BDE4`."""
    digits = mac.replace(":", "").replace("-", "").upper()
    return "WPM" + digits[-6:]


def _mac_of(interface: str, net: Path) -> str | None:
    try:
        mac = (net / interface / "address").read_text(encoding="ascii").strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    if not _MAC.fullmatch(mac) or mac == "00:00:00:00:00:00":
        return None
    return mac


def _default_route_interface(routes: Path) -> str | None:
    try:
        lines = routes.read_text(encoding="ascii").splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def default_uid(net: Path = _NET, routes: Path = _ROUTES) -> str:
    """uid of this host: the default-route interface's MAC, else the first non-loopback
    interface's by name, else `WPM000000` (docs/formats.md §2)."""
    primary = _default_route_interface(routes)
    if primary is not None:
        mac = _mac_of(primary, net)
        if mac is not None:
            return uid_from_mac(mac)
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        names = []
    for name in names:
        if name == "lo":
            continue
        mac = _mac_of(name, net)
        if mac is not None:
            return uid_from_mac(mac)
    return "WPM000000"
