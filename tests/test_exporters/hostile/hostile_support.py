"""Shared pieces of the hostile-server suite (conftest.py holds its fixtures): the harness (docs/behaviour.md §4.5): a site, a store holding records, a server
tree, a canary folder outside it, and one session run in a child process whose peak memory is
measured (and bounded by RLIMIT_AS, so a regression kills the child, not the machine)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "delivery"))

from delivery_support import DAY, T0, fill, make_tree

from config.defaults import default_files
from store import Log, StoreOptions

UID = "WPMTEST01"
SESSION = Path(__file__).with_name("_hostile_session.py")
HOSTILE_FTP = Path(__file__).with_name("_hostile_ftp.py")
CUT_S = T0 + DAY + 9 * 3600
#: Issue acceptance: no hostile case takes more than this of session memory (what the session
#: adds to the gateway process; the imports alone, pyarrow first, are ~140 MB of the process).
MEMORY_CEILING_MB = 150
#: RLIMIT_AS of the child: far above the ceiling (address space, not memory), far below the box.
GUARD_MB = 2048


@dataclass(slots=True)
class Outcome:
    ok: bool
    reason: str
    retriable: bool
    files: int
    commands: int
    received: list[str]
    session_mb: float
    peak_rss_mb: float
    logs: list[str]
    results: list[object]

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.logs)


@dataclass(slots=True)
class Site:
    """Everything one hostile case needs, under tmp_path."""

    root: Path
    config: Path = field(init=False)
    store: Path = field(init=False)
    tree: Path = field(init=False)
    canary: Path = field(init=False)
    certs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.root / "cfg"
        self.store = self.root / "store"
        self.tree = make_tree(self.root / "srv")
        self.canary = self.root / "canary"
        self.certs = self.root / "cert"
        self.certs.mkdir()
        for rel, data in default_files(UID).items():
            (self.config / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.config / rel).write_bytes(data)
        (self.config / "SCRIPT").mkdir(exist_ok=True)
        (self.canary / "sub").mkdir(parents=True)
        (self.canary / "secret.txt").write_bytes(b"outside the tree\n")
        (self.canary / f"{UID}_config.ini").write_bytes(b"# not the gateway's\n")
        (self.canary / "sub" / "kept.bin").write_bytes(os.urandom(300))
        (self.canary / f"{UID}_cmd.json").write_bytes(b'{"rpcName": "sunpm.reboot"}')

    def snapshot(self, folder: Path) -> dict[str, tuple[int, str, int]]:
        """Every entry under `folder`: mode, content hash, mtime (links not followed)."""
        out = {}
        for path in sorted(folder.rglob("*")):
            st = path.lstat()
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if path.is_file() and not path.is_symlink() else "")
            out[str(path.relative_to(folder))] = (st.st_mode, digest, st.st_mtime_ns)
        return out

    def run_session(self, server: dict[str, object], *, operation_s: float = 5.0,
                    timeout_s: float = 120.0) -> Outcome:
        spec = {"store": str(self.store), "config": str(self.config), "cert": str(self.certs),
                "uid": UID, "server": server,
                "timeouts": {"connect_s": 5.0, "operation_s": operation_s},
                "cut_s": CUT_S, "guard_mb": GUARD_MB}
        done = subprocess.run([sys.executable, str(SESSION), json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout_s, check=False,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        assert done.returncode == 0, f"session process died ({done.returncode}): {done.stderr}"
        return Outcome(**json.loads(done.stdout.strip().splitlines()[-1]))


async def record_counts(store: Path) -> dict[str, int]:
    log = await Log.open(store, StoreOptions(flush_s=0.05))
    try:
        return {dev: log.records(dev).num_rows for dev in log.devices()}
    finally:
        await log.close()


async def fill_store(store: Path) -> None:
    log = await Log.open(store, StoreOptions(flush_s=0.05))
    try:
        await fill(log, T0, T0 + DAY)
    finally:
        await log.close()


def dir_server(site: Site) -> dict[str, object]:
    return {"type": "dir", "dir_path": str(site.tree)}


@dataclass(slots=True)
class HostileFtp:
    port: int
    proc: subprocess.Popen[str]

    def settings(self) -> dict[str, object]:
        return {"type": "ftp", "host": "127.0.0.1", "port": self.port, "user": "sunpm",
                "password": "secret", "root_dir": "/", "two_step": True}


@contextmanager
def hostile_ftp(tree: Path, *tricks: Sequence[str]) -> Iterator[HostileFtp]:
    """The hostile FTP server over `tree`; `tricks` are (option, tree path) pairs."""
    args = [a for trick in tricks for a in trick]
    proc = subprocess.Popen([sys.executable, str(HOSTILE_FTP), "--root", str(tree), *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield HostileFtp(int(line.split()[1]), proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

