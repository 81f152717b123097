"""Who may use the web UI and the JSON API (docs/behaviour.md §10.1).

- One user, `WEB_User`, checked against `WEB_PasswordHash` (`scrypt$N$r$p$<salt hex>$<key hex>`,
  N 2^14, r 8, p 1, 16-byte salt). Without a configured hash, the first start draws a random
  16-character password, prints it on the console (never in the gateway log, which is uploaded)
  and keeps it in `<data>/initial-password` (0600) with its hash in `<data>/web-password`; later
  starts reuse that hash and point to the file.
- A login gives a random 256-bit session cookie (HttpOnly, SameSite=Strict) and the session's
  CSRF token; a session ends after 12 h idle, at logout and at restart (sessions live in memory).
- Failed logins are counted per client address: the 5th inside a minute blocks that client's
  logins for 60 s (429 with Retry-After), right password or not.
- API clients may send HTTP Basic credentials instead (no cookie, no CSRF); `sunpm cmd` on the
  box the bearer token of `<data>/api-token` (0600, drawn anew at each start, loopback only).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import secrets
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fsio import fsync_dir

log = logging.getLogger("sunpm.web")

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
#: scrypt with N 2^14 and r 8 needs 16 MiB; a little more lets a stronger stored hash verify.
_SCRYPT_MAXMEM: Final = 64 * 2**20

SESSION_IDLE_S: Final = 12 * 3600
FAILURES_ALLOWED: Final = 5
FAILURE_WINDOW_S: Final = 60.0
BLOCKED_S: Final = 60.0
#: Sessions kept at most; the least recently used goes first (a script logging in in a loop
#: must not fill the memory of a 512 MB box).
MAX_SESSIONS: Final = 64

INITIAL_PASSWORD_FILE: Final = "initial-password"
PASSWORD_HASH_FILE: Final = "web-password"
API_TOKEN_FILE: Final = "api-token"
_ALPHABET: Final = string.ascii_letters + string.digits


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         dklen=KEY_BYTES, maxmem=_SCRYPT_MAXMEM)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """False for a wrong password and for a hash that is not of our form (blocking: ~50 ms)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        if not key or n > 2**20 or r > 32 or p > 16:
            return False
        candidate = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key),
                                   maxmem=_SCRYPT_MAXMEM)
    except ValueError:
        return False
    return hmac.compare_digest(candidate, key)


def new_password(length: int = 16) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True, slots=True)
class FirstStart:
    """What the console is told about the password at start (None: a configured hash)."""

    password: str | None      # drawn now; None when an earlier start drew it
    file: Path
    kept: bool = True         # False: the file could not be written (a full disk)


def local_password_hash(data_dir: Path) -> tuple[str, FirstStart | None]:
    """The hash to check when `WEB_PasswordHash` is empty: drawn at the first start (blocking)."""
    hash_file = data_dir / PASSWORD_HASH_FILE
    initial = data_dir / INITIAL_PASSWORD_FILE
    if hash_file.is_file():
        stored = hash_file.read_text().strip()
        if stored.startswith("scrypt$"):
            return stored, FirstStart(None, initial) if initial.is_file() else None
    password = new_password()
    stored = hash_password(password)
    try:
        write_private(initial, (password + "\n").encode())
        write_private(hash_file, (stored + "\n").encode())
    except OSError as err:
        # A first start on a full disk: the web UI runs all the same, with the password the
        # console shows, for this run (the next start draws another).
        log.error("%s: not written (%s); the one-time password holds for this run only",
                  data_dir, err.strerror or err)
        for path in (initial, hash_file):
            with contextlib.suppress(OSError):
                path.unlink()
        return stored, FirstStart(password, initial, kept=False)
    return stored, FirstStart(password, initial)


def new_api_token(data_dir: Path) -> str:
    """A bearer token for `sunpm cmd` on this box, new at each start (blocking).

    A token that cannot be written (a full disk) leaves the web UI without bearer access for
    this run (""): the UI is what an operator needs on a full disk, and a token nobody can read
    serves no one."""
    token = secrets.token_urlsafe(32)
    path = data_dir / API_TOKEN_FILE
    try:
        write_private(path, (token + "\n").encode())
    except OSError as err:
        log.error("%s: not written (%s); the web API takes no bearer token until a restart",
                  path, err.strerror or err)
        with contextlib.suppress(OSError):
            path.unlink()
        return ""
    return token


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` all or nothing with a file only its owner reads (0600 from creation on,
    never readable by others for an instant)."""
    staging = path.with_name(path.name + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    except OSError:
        os.close(fd)
        os.unlink(staging)
        raise
    os.close(fd)
    os.replace(staging, path)
    fsync_dir(path.parent)


@dataclass(slots=True)
class Session:
    token: str
    user: str
    csrf: str
    last_seen: float


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class Sessions:
    """Live sessions and the login throttle (in memory: a restart ends every session)."""

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._now = clock or time.monotonic
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}

    def open(self, user: str) -> Session:
        now = self._now()
        self._expire(now)
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        session = Session(token=token, user=user, csrf=secrets.token_urlsafe(32), last_seen=now)
        self._sessions[token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        now = self._now()
        if session is None:
            return None
        if now - session.last_seen > SESSION_IDLE_S:
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def close_all(self, *, keep: str | None = None) -> None:
        """A password change ends every session but the one that made it."""
        for token in [t for t in self._sessions if t != keep]:
            del self._sessions[token]

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now - s.last_seen > SESSION_IDLE_S]:
            del self._sessions[token]

    # ------------------------------------------------------------------ throttle

    def blocked_for(self, client: str) -> float:
        """Seconds before `client` may try to log in again (0: now)."""
        entry = self._failures.get(client)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self._now())

    def failed(self, client: str) -> bool:
        """Counts a failed login; True when it blocks the client."""
        now = self._now()
        entry = self._failures.setdefault(client, _Failures())
        entry.times.append(now)
        while entry.times and now - entry.times[0] > FAILURE_WINDOW_S:
            entry.times.popleft()
        blocked = len(entry.times) >= FAILURES_ALLOWED
        if blocked:
            entry.blocked_until = now + BLOCKED_S
            entry.times.clear()
        if len(self._failures) > 1024:
            # Forget clients that are neither blocked nor failing lately.
            for key in [k for k, v in self._failures.items()
                        if v.blocked_until < now and not v.times]:
                del self._failures[key]
        return blocked

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
