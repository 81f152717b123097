"""What a session tells its scheduler and its log: why it started, how it ended, when it is
retried (docs/behaviour.md §4.1, §4.5; the fixed lines of docs/formats.md §11)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from config.model import ServerSettings, ServerType
from exporters.transports._base import TransportError

log = logging.getLogger("sunpm.session")

_SERVER_PREFIX: Final = re.compile(r"^server \d+: ")


class Trigger(StrEnum):
    """Why a session started; the word of the `session started` line (docs/formats.md §11)."""

    SCHEDULE = "schedule"
    ALARM = "alarm"
    COMMAND = "command"
    STARTUP = "startup"
    CONFIG_CHANGE = "config change"
    RETRY = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResult:
    ok: bool
    files: int = 0
    commands: int = 0
    reason: str = ""
    retriable: bool = True


_RETRY_MIN: Final = (5, 10, 20, 40)


def retry_delay_s(failures: int, *, retriable: bool) -> int:
    """When the `failures`-th failed session in a row (from 1) is retried (docs/behaviour.md §4.1,
    §4.5): 5, 10, 20, 40, then every 60 min; a non-retriable failure waits 60 min at once."""
    if not retriable or failures > len(_RETRY_MIN):
        return 3600
    return _RETRY_MIN[max(failures, 1) - 1] * 60


def server_label(settings: ServerSettings) -> str:
    """`<type> <host>:<port>` of the `session started` line (`dir`: its path)."""
    if settings.type is ServerType.DIR:
        return f"{settings.type} {settings.dir_path}"
    if settings.type is ServerType.WEBDAV and settings.http_url:
        url = urlsplit(settings.http_url)
        return f"{settings.type} {url.hostname}:{url.port or 443}"
    return f"{settings.type} {settings.host}:{settings.port}"


def reason_of(err: BaseException | str) -> str:
    """The reason of a `session failed` line: an error's text without its `server <n>: `."""
    return _SERVER_PREFIX.sub("", str(err))


@dataclass(slots=True)
class Counts:
    """What a session did so far, for its last line and its result."""

    files: int = 0
    commands: int = 0
    refusals: list[str] = field(default_factory=list)


def refused(err: TransportError, counts: Counts) -> None:
    """A directory missing or a right lacking: that part stops, the rest goes on."""
    if err.retriable:
        raise err
    log.error("%s", err)
    counts.refusals.append(str(err))
