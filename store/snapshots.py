"""Content-addressed snapshots of definition files and configurations (docs/architecture.md §1).

    defs/<sha256 of the bytes>.csv          one definition file's bytes; snapshot id
                                            `<sha256>:<file name>` (records' `def` column)
    config/<hash>/<name>                    one configuration: its files, byte for byte
    config/<hash>/                          hash = SHA-256 over, for each file sorted by name,
                                            name (UTF-8), NUL, decimal length, NUL, bytes

Written under a temporary name, fsynced, renamed, directory fsynced: a snapshot is either whole or
absent. Reads check the hash, so a damaged snapshot is reported, never used; putting the same
content again rewrites it. Puts are serialised in the process (the store's lock file keeps other
processes out): threads putting the same snapshot would otherwise share its temporary name.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import fsio
from fsio import fsync_dir, write_file_durably, write_synced
from store.errors import SnapshotError

_HEX = re.compile(r"^[0-9a-f]{64}$")
_PUT_LOCK = threading.Lock()


def definition_id(name: str, data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}:{name}"


def config_hash(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0")
        digest.update(data)
    return digest.hexdigest()


def put_definition(root: Path, name: str, data: bytes) -> str:
    if not name or "/" in name or "\0" in name:
        raise SnapshotError(f"definition file name {name!r}: not a plain file name")
    snapshot_id = definition_id(name, data)
    sha = snapshot_id.split(":", 1)[0]
    target = root / "defs" / f"{sha}.csv"
    with _PUT_LOCK:
        if not _holds(target, sha):
            _write_atomic(target, data)
    return snapshot_id


def _holds(path: Path, sha: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha
    except FileNotFoundError:
        return False


def get_definition(root: Path, snapshot_id: str) -> bytes:
    sha, _, name = snapshot_id.partition(":")
    if not _HEX.match(sha) or not name:
        raise SnapshotError(f"{snapshot_id!r}: not a definition snapshot id (<sha256>:<name>)")
    path = root / "defs" / f"{sha}.csv"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{path}: definition snapshot of {name} is missing") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise SnapshotError(f"{path}: definition snapshot of {name} is damaged (hash mismatch)")
    return data


def put_config(root: Path, files: Mapping[str, bytes]) -> str:
    for name in files:
        pure = PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts or "\0" in name:
            raise SnapshotError(f"configuration file name {name!r}: not a relative file name")
    digest = config_hash(files)
    target = root / "config" / digest
    with _PUT_LOCK:
        if target.is_dir():
            try:
                get_config(root, digest)
                return digest
            except SnapshotError:
                # Damaged: replaced below by the same content, whole.
                _remove_tree(root / "config" / f".{digest}.damaged", target)
        tmp = root / "config" / f".{digest}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        for name, data in files.items():
            path = tmp / name
            fsio.mkdir(path.parent, parents=True)
            write_synced(path, data)
        fsio.mkdir(tmp, parents=True)
        _fsync_tree(tmp)
        fsio.rename(tmp, target)
        fsync_dir(target.parent)
    return digest


def _remove_tree(aside: Path, tree: Path) -> None:
    """Rename `tree` out of the way (one step, so it is never seen half deleted), then delete."""
    if aside.exists():
        shutil.rmtree(aside)
    fsio.rename(tree, aside)
    fsync_dir(tree.parent)
    shutil.rmtree(aside)


def get_config(root: Path, snapshot: str) -> dict[str, bytes]:
    if not _HEX.match(snapshot):
        raise SnapshotError(f"{snapshot!r}: not a configuration snapshot hash")
    base = root / "config" / snapshot
    if not base.is_dir():
        raise SnapshotError(f"{base}: configuration snapshot is missing")
    files: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        if path.is_file():
            files[path.relative_to(base).as_posix()] = path.read_bytes()
    if config_hash(files) != snapshot:
        raise SnapshotError(f"{base}: configuration snapshot is damaged (hash mismatch)")
    return files


def list_configs(root: Path) -> list[str]:
    base = root / "config"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _HEX.match(p.name))


def _write_atomic(target: Path, data: bytes) -> None:
    write_file_durably(target, data, tmp=target.with_name(f".{target.name}.tmp"))


def _fsync_tree(base: Path) -> None:
    for path in sorted(base.rglob("*"), reverse=True):
        if path.is_dir():
            fsync_dir(path)
    fsync_dir(base)
