"""Errors of the script host."""

from __future__ import annotations

from config.errors import SunpmError


class ScriptError(SunpmError):
    """A script command or host action failed; `str()` is the one-line answer or log text
    (`unknown script 'foo'`, `exportlimit.setLimit: va must be a number >= 0`)."""
