"""What the `ftp`, `apn`, `factory` and `updateFirmware` commands do to the box
(docs/behaviour.md §6, §7.3; docs/formats.md §12.3).

- `change_config`: set config.ini keys (None: back to the default) after checking the whole file
  with them; a warning on a key set counts as an error (a bad value changes nothing). The file is
  replaced atomically; the gateway's configuration watch then applies it as a local change.
- `factory_wipe`: the configuration (the four files, definitions, scripts, certificates) and the
  whole data folder's state (store, outboxes, staged updates, status) go; a default configuration
  for the same uid is written. An SD mirror is left alone.
- `stage_firmware`: download a package (http, https, ftp) to `<data>/update/` within 10 min,
  256 MiB at most, check its MD5; `install_firmware` runs `SYSTEM_UpdateCommand <package>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import logging
import math
import os
import re
import shlex
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

from config import ConfigError, check_site_change, parse_config_ini, render_config_ini
from config.decimal_text import read_integer
from config.defaults import default_files
from config.errors import Severity
from config.masking import masked
from fsio import fsync_dir, rename, write_file_durably
from pipeline.service import in_force

log = logging.getLogger("sunpm.system")

#: docs/behaviour.md §4 (hostile server): a package is streamed to disk, 256 MiB at most.
PACKAGE_CAP_BYTES: Final = 256 * 2**20
DOWNLOAD_LIMIT_S: Final = 600.0
#: The configuration tree's folders a factory reset empties (docs/behaviour.md §6).
CONFIG_FOLDERS: Final = ("DEF", "SCRIPT", "CERT")
#: What marks a data folder as the demo plant's (pipeline/service/demo.py, `is_demo`).
DEMO_MARK: Final = "demo.json"
UPDATE_FOLDER: Final = "update"
PART_SUFFIX: Final = ".part"
#: What `<data>/update/` keeps across restarts: the /BIN bookkeeping (pipeline/service/firmware.py).
KEPT_FILES: Final = frozenset({"tried.json", "attempts.json"})
#: How long `SYSTEM_UpdateCommand` may run before it is killed (**Decision**).
INSTALL_LIMIT_S: Final = 1800.0
#: The end of its output kept for the log.
_OUTPUT_TAIL: Final = 2000
_MD5: Final = re.compile(r"[0-9a-fA-F]{32}")
#: An uploaded update package: a plain file name ending .spm.
PACKAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.spm")


class MaintenanceError(Exception):
    """A refused change; the text is the command's error answer without the command name."""


def config_path(config_dir: Path, uid: str) -> Path:
    return config_dir / "CONFIG" / f"{uid}_config.ini"


def change_config(config_dir: Path, uid: str, values: Mapping[str, str | None], *,
                  folder_lock: threading.Lock | None = None) -> None:
    """Set `values` in config.ini, or change nothing and raise `MaintenanceError`.

    The whole site is checked with the new file, not the file alone: `SERVER_Type=ftps` over an
    `FTP_CaFile` that /CERT lacks would be written, answered OK, then refused by the
    configuration watch, leaving the folder holding a file that is not in force. With
    `folder_lock` (the running gateway's), the file is replaced under it, as any local change."""
    path = config_path(config_dir, uid)
    try:
        ini = parse_config_ini(path.read_bytes(), path.name).value
    except (OSError, ConfigError) as err:
        raise MaintenanceError(f"{path.name} cannot be read: {err}") from None
    for key, value in values.items():
        if value is not None and ("\r" in value or "\n" in value):
            raise MaintenanceError(f"{key}: a line end in the value; not written")
        ini = ini.with_value(key, value)
    data = render_config_ini(ini)
    try:
        parsed = parse_config_ini(data, path.name)
    except ConfigError as err:
        errors = [p for p in err.problems if p.severity is Severity.ERROR]
        raise MaintenanceError(_problem_text(errors[0] if errors else err.problems[0])) from None
    for problem in parsed.warnings:
        if problem.field in values:
            raise MaintenanceError(_problem_text(problem))
    errors = [p for p in check_site_change(config_dir, {f"CONFIG/{path.name}": data}, uid)
              if p.severity is Severity.ERROR]
    if errors:
        raise MaintenanceError(_problem_text(errors[0]))
    with folder_lock or contextlib.nullcontext():
        write_file_durably(path, data)


def _problem_text(problem: object) -> str:
    """The command's error: the problem without the file's consequence, a secret hidden (the
    result goes to ACK files, MQTT and the journal)."""
    field = getattr(problem, "field", "")
    message = getattr(problem, "message", str(problem))
    message = masked(field, re.sub(r"; (default .* used|ignored|file rejected)$", "", message))
    return f"{field}: {message}" if field else message


def factory_wipe(config_dir: Path, data_dir: Path, store_dir: Path, uid: str) -> bool:
    """docs/behaviour.md §6 factory reset: configuration and stored state go, defaults come
    (True), or, in the demo's data folder, the demo's own at its restart (False)."""
    config = config_dir / "CONFIG"
    if config.is_dir():
        for path in config.iterdir():
            if path.is_file() and path.name.startswith(f"{uid}_"):
                path.unlink()
    for folder in CONFIG_FOLDERS:
        shutil.rmtree(config_dir / folder, ignore_errors=True)
    shutil.rmtree(store_dir, ignore_errors=True)
    for name in (UPDATE_FOLDER, "status.json", in_force.FILE_NAME):
        target = data_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
    for folder in ("CONFIG", *CONFIG_FOLDERS):
        (config_dir / folder).mkdir(parents=True, exist_ok=True)
    if (data_dir / DEMO_MARK).is_file():
        # The demo's restart writes the demo's own configuration into the empty folder, as at
        # a first start: the defaults (no server, no inverter) would be kept as the user's.
        return False
    for rel, data in default_files(uid).items():
        write_file_durably(config_dir / rel, data)
    return True


def check_firmware_request(url: str, checksum: str, interface: str) -> str:
    """The scheme to download with, or `MaintenanceError` before anything is fetched."""
    if not _MD5.fullmatch(checksum):
        raise MaintenanceError(f"checksum must be 32 hex digits (MD5), got '{checksum}'")
    if interface.lower() not in ("", "ethernet1", "ethernet2", "modem"):
        raise MaintenanceError(f"interface must be ethernet1, ethernet2, modem or empty, got "
                               f"'{interface}'")
    if interface:
        # Routing a download through one interface is the host's network setup, not ours.
        raise MaintenanceError(f"interface {interface} cannot be chosen on this platform; "
                               "leave it empty (the host's route is used)")
    scheme = urllib.parse.urlsplit(url if "://" in url else f"http://{url}").scheme.lower()
    if scheme == "sftp":
        raise MaintenanceError("sftp downloads are not supported in this version; use http, "
                               "https or ftp")
    if scheme not in ("http", "https", "ftp"):
        raise MaintenanceError(f"url scheme '{scheme}' is not http, https or ftp")
    return scheme


def _with_credentials(url: str, login: str, password: str) -> tuple[str, str | None]:
    """The URL to open (ftp credentials inside it) and an HTTP basic authorisation.

    An http(s) URL's own `user:password@` (docs/formats.md §13.1 lets a URL carry them) is
    taken out of it: urllib would look the whole `user:password@host` up as the host name.
    `login` and `password`, when given, win over it."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme.lower() != "ftp" and "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=host)
        if not login:
            user, _, secret = userinfo.partition(":")
            login, password = urllib.parse.unquote(user), urllib.parse.unquote(secret)
    if not login:
        return parts.geturl(), None
    if parts.scheme.lower() == "ftp":
        netloc = f"{urllib.parse.quote(login, safe='')}:{urllib.parse.quote(password, safe='')}" \
                 f"@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl(), None
    import base64
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return parts.geturl(), f"Basic {token}"


def write_package(source: IO[bytes], target: Path, *, md5: str = "",
                  deadline: float = math.inf, announced: int | None = None) -> tuple[str, int]:
    """`source` copied to `target` all or nothing, in chunks of 64 KiB (a package can be
    hundreds of MB on a 512 MB box), at most `PACKAGE_CAP_BYTES`: its MD5 and size. With `md5`,
    a package of another MD5 never gets its name (checksum mismatch); past `deadline`
    (`time.monotonic()`) the copy stops, so that a download given up on does not go on in its
    thread (a server that trickles). With `announced` (the size the server gave), fewer bytes
    are a download cut, not a package of another MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    # A name of its own: two stagings of one name at once (an upload, a URL, /BIN) must not
    # write into one file; one left by a crash is removed at the next start.
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PART_SUFFIX,
                                         dir=target.parent)
    partial = Path(temporary)
    try:
        read = getattr(source, "read1", source.read)     # what arrived, not 64 KiB awaited
        with os.fdopen(handle, "wb") as out:
            while chunk := read(1 << 16):
                if time.monotonic() > deadline:
                    raise MaintenanceError(f"download failed: not done within "
                                           f"{DOWNLOAD_LIMIT_S:.0f} s")
                size += len(chunk)
                if size > PACKAGE_CAP_BYTES:
                    raise MaintenanceError(f"{target.name}: larger than 256 MiB; not used")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if announced is not None and size != announced:
            raise MaintenanceError(f"download failed: cut after {size} of {announced} bytes")
        if md5 and digest.hexdigest() != md5.lower():
            raise MaintenanceError(f"checksum mismatch (expected {md5.lower()}, got "
                                   f"{digest.hexdigest()})")
        rename(partial, target)
        fsync_dir(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest(), size


def clean_update_folder(data_dir: Path) -> None:
    """At start, `<data>/update/` keeps only what says which packages were tried: downloads cut
    by a crash (`.part`) and packages staged by the previous run (installed, failed or never
    run) go, so that they do not pile up (a package can be 256 MiB)."""
    folder = data_dir / UPDATE_FOLDER
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for path in entries:
        if path.name in KEPT_FILES or (path.is_dir() and not path.is_symlink()):
            continue
        try:
            path.unlink()
        except OSError as err:
            log.warning("%s not removed: %s", path, err.strerror or err)


def _download(url: str, login: str, password: str, target: Path, md5: str,
              deadline: float) -> str:
    """Stream `url` to `target` (capped, named only when its MD5 is `md5`)."""
    address, authorisation = _with_credentials(url, login, password)
    request = urllib.request.Request(address)
    if authorisation is not None:
        request.add_header("Authorization", authorisation)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            announced = _announced_length(reply.headers.get_all("Content-Length") or [], url)
            got, _ = write_package(reply, target, md5=md5, deadline=deadline,
                                   announced=announced)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise MaintenanceError(f"download failed: {reason}") from None
    return got


def _announced_length(values: list[str], url: str) -> int | None:
    """The size a server's `Content-Length` announces (None without one); `MaintenanceError`
    naming the server and the header when it is no byte count (`²`, `-5`, `1e3`, two that
    differ): a download whose end cannot be told from a cut is not staged."""
    if not values:
        return None
    lengths = {read_integer(value.strip(), max_digits=18) for value in values}
    length = lengths.pop() if len(lengths) == 1 else None
    if length is None or length < 0:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        server = parts.hostname or "?"
        if parts.port:
            server += f":{parts.port}"
        shown = ", ".join(repr(value[:40]) for value in values[:2])
        raise MaintenanceError(f"download failed: the server {server} sent a malformed "
                               f"Content-Length header ({shown}), not a byte count")
    return length


async def stage_firmware(data_dir: Path, url: str, login: str, password: str,
                         checksum: str) -> Path:
    """The verified package in `<data>/update/` (docs/behaviour.md §7.3)."""
    folder = data_dir / UPDATE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlsplit(url if "://" in url else f"http://{url}").path).name
    # The URL's last segment names the file only when it is a plain package name: `..`, a
    # bookkeeping file's name (tried.json) or control characters never reach the file system.
    target = folder / (name if PACKAGE_NAME.fullmatch(name) else "package.spm")
    try:
        async with asyncio.timeout(DOWNLOAD_LIMIT_S):
            await asyncio.to_thread(_download, url, login, password, target, checksum,
                                    time.monotonic() + DOWNLOAD_LIMIT_S)
    except TimeoutError:
        raise MaintenanceError(f"download failed: not done within {DOWNLOAD_LIMIT_S:.0f} s") \
            from None
    return target


def staged_upload(data_dir: Path, name: str, checksum: str) -> Path:
    """A package the web UI staged in `<data>/update/`, checked again against its MD5 before it
    is installed (blocking: reads the file)."""
    if not PACKAGE_NAME.fullmatch(name):
        raise MaintenanceError(f"package must be a plain file name ending .spm, got '{name[:60]}'")
    if not _MD5.fullmatch(checksum):
        raise MaintenanceError(f"checksum must be 32 hex digits (MD5), got '{checksum[:40]}'")
    path = data_dir / UPDATE_FOLDER / name
    digest = hashlib.md5(usedforsecurity=False)
    if path.is_symlink() or not path.is_file():
        raise MaintenanceError(f"{name} is not staged")
    try:
        with path.open("rb") as package:
            while chunk := package.read(1 << 16):
                digest.update(chunk)
    except OSError as err:
        raise MaintenanceError(f"{name} cannot be read: {err.strerror or err}") from None
    if digest.hexdigest() != checksum.lower():
        raise MaintenanceError(f"checksum mismatch (expected {checksum.lower()}, got "
                               f"{digest.hexdigest()})")
    return path


def update_argv(command: str) -> list[str]:
    """`SYSTEM_UpdateCommand` split as a shell would; `MaintenanceError` when it cannot be (an
    unbalanced quote) or is empty, so that a command is refused before anything is
    downloaded, not answered OK and then never run."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise MaintenanceError(f"SYSTEM_UpdateCommand cannot be split into words ({err})") \
            from None
    if not argv:
        raise MaintenanceError("SYSTEM_UpdateCommand is not set")
    return argv


_install_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = \
    weakref.WeakKeyDictionary()


async def install_firmware(command: str, package: Path) -> int:
    """Run `SYSTEM_UpdateCommand <package>`, one at a time; its exit status (logged). A command
    still running after `INSTALL_LIMIT_S` is killed (with what it started) and counts as failed;
    of its output only the end is kept, however much it prints."""
    loop = asyncio.get_running_loop()
    lock = _install_locks.setdefault(loop, asyncio.Lock())
    try:
        argv = [*update_argv(command), str(package)]
    except MaintenanceError as err:
        log.error("Update command could not start: %s", err)
        return 127
    async with lock:
        log.info("Installing update: %s", " ".join(shlex.quote(a) for a in argv))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            log.error("Update command could not start: %s", err)
            return 127
        assert proc.stdout is not None
        tail = bytearray()
        try:
            async with asyncio.timeout(INSTALL_LIMIT_S):
                while chunk := await proc.stdout.read(1 << 16):
                    tail += chunk
                    del tail[:-_OUTPUT_TAIL * 4]
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            log.error("Update command killed: still running after %.0f s; the running version "
                      "stays: %s", INSTALL_LIMIT_S, _tail_text(tail))
            return -signal.SIGKILL
        finally:
            if proc.returncode is None:      # cancelled (the service stops): not left behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    text = _tail_text(tail)
    if proc.returncode:
        log.error("Update command exited %d; the running version stays: %s", proc.returncode,
                  text)
    else:
        log.info("Update command done: %s", text)
    return proc.returncode or 0


def _tail_text(output: bytes | bytearray) -> str:
    return output.decode(errors="replace").strip()[-_OUTPUT_TAIL:]
