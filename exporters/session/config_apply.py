"""Configuration from the server applied whole or not at all, even across a power cut
(docs/behaviour.md §4.2 steps 2-5): a two-phase rename.

    <config>/.apply            names of the staged files, fsynced; present = roll forward
    <config>/<dir>/<name>.new  the staged bytes, fsynced
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fsio import fsync_dir, write_synced


def apply_config_files(config_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a set of configuration files all or nothing (module docstring); blocking."""
    staged = []
    # CONFIG last: a reader without the folder's lock (the configuration watch of a gateway in
    # another process, e.g. beside `sunpm discover --import`) never meets a daq.csv naming a
    # definition file not yet in place.
    for rel, data in sorted(files.items(), key=lambda item: (item[0].startswith("CONFIG/"),
                                                             item[0])):
        target = config_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        new = target.with_name(target.name + ".new")
        write_synced(new, data)
        staged.append(rel)
    for folder in {(config_dir / rel).parent for rel in staged}:
        fsync_dir(folder)
    write_synced(config_dir / ".apply", "\n".join(staged).encode())
    fsync_dir(config_dir)
    recover_config_apply(config_dir)


def recover_config_apply(config_dir: Path) -> list[str]:
    """Finish an interrupted `apply_config_files` (roll forward); the paths renamed."""
    marker = config_dir / ".apply"
    if not marker.is_file():
        return []
    # Split at line feeds only: `splitlines` also splits at U+2028 and other separators a
    # file name may hold.
    staged = [line for line in marker.read_text().split("\n") if line]
    for rel in staged:
        target = config_dir / rel
        new = target.with_name(target.name + ".new")
        if new.exists():
            os.replace(new, target)
    for folder in {(config_dir / rel).parent for rel in staged}:
        fsync_dir(folder)
    marker.unlink()
    fsync_dir(config_dir)
    return staged
