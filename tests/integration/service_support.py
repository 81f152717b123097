"""`sunpm run` as a child process, for the service's end-to-end and crash tests.

The test's event loop keeps serving the simulated devices while the service runs; the service's
stdout and stderr go to files (a pipe nobody reads would block it).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e_support import SUNPM

#: A stderr line of the service (docs/formats.md §11 form, the categories of the LOG files).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) "
                      r"[a-z]+(:[A-Za-z0-9_.-]+)?: \S")
STOP_LIMIT_S = 10.0


@dataclass(slots=True)
class Service:
    proc: asyncio.subprocess.Process
    out: Path
    err: Path

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def logged(self, text: str) -> Callable[[], bool]:
        """A check for `wait_until`: `text` is in the service's stderr."""
        return lambda: text in self.stderr

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> tuple[int, float]:
        """Send `sig`; the exit code and how long the exit took (killed after 20 s)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(20):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"sunpm run did not stop on {sig.name}:\n{self.stderr[-3000:]}") from None
        return code, time.monotonic() - start

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()


async def start(args: Sequence[str], folder: Path, *, name: str = "service",
                cwd: Path | None = None) -> Service:
    folder.mkdir(parents=True, exist_ok=True)
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    fout, ferr = _append_fd(out), _append_fd(err)
    try:
        proc = await asyncio.create_subprocess_exec(
            SUNPM, "run", *args, stdout=fout, stderr=ferr, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(fout)
        os.close(ferr)
    return Service(proc, out, err)


def _append_fd(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


async def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
                     service: Service | None = None) -> float:
    """Poll `check` every 0.2 s; the seconds it took. Fails naming `what` (and the service's
    last log lines) after `timeout_s`, or at once if the service exits."""
    start = time.monotonic()
    while not check():
        if service is not None and service.proc.returncode is not None:
            raise AssertionError(f"sunpm run exited {service.proc.returncode} while waiting for "
                                 f"{what}:\n{service.stderr[-3000:]}")
        if time.monotonic() - start > timeout_s:
            tail = service.stderr[-3000:] if service is not None else ""
            raise AssertionError(f"no {what} after {timeout_s:g} s\n{tail}")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def gunzip_folder(folder: Path, pattern: str) -> dict[str, str]:
    """name -> text of every complete gzip file matching `pattern` (a `.tmp` is not one)."""
    return {p.name: gzip.decompress(p.read_bytes()).decode()
            for p in sorted(folder.glob(pattern)) if not p.name.endswith(".tmp")}


def bad_log_lines(text: str) -> list[str]:
    """stderr lines not in the gateway's log form (traceback lines after an ERROR excepted)."""
    return [line for line in text.splitlines()
            if line and not LOG_LINE.match(line) and not line.startswith((" ", "Traceback"))
            and not re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line)]
