"""Whether a serial device path is usable, checked once before a command listens on it (the
gateway's readers retry a missing port for ever; a command must say so and stop)."""

from __future__ import annotations

import os


def port_problem(path: str) -> str | None:
    """None when `path` opens as a terminal device, else the reason (OS error text)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        return f"{err.strerror} (errno {err.errno})"
    try:
        if not os.isatty(fd):
            return "not a serial device"
    finally:
        os.close(fd)
    return None
