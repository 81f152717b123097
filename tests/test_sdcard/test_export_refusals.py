"""`sunpm export` (the live store's re-export) refuses an output it cannot or must not use, as
`sunpm sd reexport` does, before writing anything."""

from __future__ import annotations

from pathlib import Path

from plant import Plant, hashes, sunpm


def _export(month: Plant, out: Path) -> tuple[int, str]:
    ran = sunpm("export", "--server", "1", "--from", "2021-02-02", "--to", "2021-02-04",
                "--store", month.store, "--config", month.config, "--out", out)
    return ran.code, ran.err


def test_an_output_inside_the_store_is_refused_and_nothing_is_written(month: Plant) -> None:
    before = hashes(month.store)
    for out in (month.store / "replay", month.store / "devices" / "1" / "replay"):
        code, err = _export(month, out)
        assert (code, err) == (1, f"sunpm export: {out}: inside the store {month.store}; the "
                                  "store is never written to\n")
        assert not out.exists()
    assert hashes(month.store) == before


def test_an_output_that_is_a_file_is_refused_by_its_name(month: Plant, tmp_path: Path) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder\n")
    assert _export(month, taken) == (2, f"sunpm export: {taken}: exists and is not a "
                                        "directory\n")
    assert taken.read_text() == "not a folder\n"
    code, err = _export(month, tmp_path / "replay")
    assert code == 0, err
    assert len(list((tmp_path / "replay" / "DATA").iterdir())) == 3
