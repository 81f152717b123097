"""Definition and configuration snapshots under concurrent writers and after damage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from store import snapshots
from store.errors import SnapshotError

WRITERS = 8
ROUNDS = 20


def _race(work: Callable[[], str]) -> list[str | BaseException]:
    """Run `work` in WRITERS threads released together, ROUNDS times each."""
    results: list[str | BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WRITERS)

    def run() -> None:
        start.wait(timeout=10)
        for _ in range(ROUNDS):
            try:
                outcome: str | BaseException = work()
            except (OSError, SnapshotError) as err:  # collected: the test asserts none
                outcome = err
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=run, name=f"put-{n}") for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return results


def _fresh(root: Path) -> Path:
    for sub in ("defs", "config"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def test_same_definition_put_from_many_threads_at_once_never_fails(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    data = b"modbusTCP;Inverter;ACME;S1\n1;3;40072;U16;;A;;1;0;A;4\n"
    results = _race(lambda: snapshots.put_definition(root, "inv.csv", data))
    assert len(results) == WRITERS * ROUNDS
    assert {r if isinstance(r, str) else repr(r) for r in results} == \
        {snapshots.definition_id("inv.csv", data)}
    assert [p.name for p in (root / "defs").iterdir()] == [f"{results[0]!s}".split(":")[0] + ".csv"]


def test_same_configuration_put_from_many_threads_at_once_never_fails(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    files = {"WPM00BDE4_config.ini": b"[GATEWAY]\n", "defs/inv.csv": b"modbusTCP;a;b;c\n"}
    results = _race(lambda: snapshots.put_config(root, files))
    digest = snapshots.config_hash(files)
    assert {r if isinstance(r, str) else repr(r) for r in results} == {digest}
    assert [p.name for p in (root / "config").iterdir()] == [digest]
    assert snapshots.get_config(root, digest) == files


def test_putting_a_damaged_definition_again_repairs_it(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    data = b"modbusRTU;Meter;ACME;M3\n"
    ident = snapshots.put_definition(root, "meter.csv", data)
    path = root / "defs" / f"{ident.split(':')[0]}.csv"
    path.write_bytes(b"\0" * len(data))      # flash that lost the page
    with pytest.raises(SnapshotError, match="damaged"):
        snapshots.get_definition(root, ident)
    assert snapshots.put_definition(root, "meter.csv", data) == ident
    assert snapshots.get_definition(root, ident) == data


def test_putting_a_damaged_configuration_again_repairs_it(tmp_path: Path) -> None:
    root = _fresh(tmp_path)
    files = {"WPM00BDE4_config.ini": b"[GATEWAY]\n", "defs/inv.csv": b"modbusTCP;a;b;c\n"}
    digest = snapshots.put_config(root, files)
    (root / "config" / digest / "defs" / "inv.csv").write_bytes(b"modbusTCP;x;y;z\n")
    with pytest.raises(SnapshotError, match="damaged"):
        snapshots.get_config(root, digest)
    assert snapshots.put_config(root, files) == digest
    assert snapshots.get_config(root, digest) == files
