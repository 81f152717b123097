"""A fleet dataset (OUT) damaged between runs: a partition that is no Parquet file is named and
left as it is (it may hold rows merged from elsewhere), a manifest that is no JSON makes ingest
read every file again; never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

from plant import Plant, sunpm


def _tree(month: Plant, root: Path) -> Path:
    tree = root / "tree"
    shutil.copytree(month.server, tree)
    for sub in ("CONFIG", "DEF"):
        shutil.copytree(month.config / sub, tree / sub, dirs_exist_ok=True)
    return tree


def test_a_damaged_partition_is_named_and_never_written_over(month: Plant,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    assert sunpm("sd", "export-parquet", month.dump, out).code == 0
    partition = out / "uid=WPMSD0001" / "device=1" / "date=2021-02-03" / "records.parquet"
    partition.write_bytes(b"half a copy")
    tree = _tree(month, tmp_path)
    for args in (("sd", "export-parquet", month.dump, out), ("ingest", tree, out)):
        ran = sunpm(*args)
        assert ran.code == 1, ran.err
        assert "Traceback" not in ran.err
        assert f"{partition}: not a readable partition of the dataset (" in ran.err
        assert ran.err.rstrip().endswith("move it aside and run again")
        assert partition.read_bytes() == b"half a copy"


def test_a_damaged_manifest_makes_ingest_read_every_file_again(month: Plant,
                                                               tmp_path: Path) -> None:
    out, tree = tmp_path / "fleet", _tree(month, tmp_path)
    first = sunpm("ingest", tree, out)
    assert first.code == 0, first.err
    manifest = out / "_ingested" / "WPMSD0001.json"
    manifest.write_text("{")
    again = sunpm("ingest", tree, out)
    assert again.code == 0, again.err
    assert (f"warning: {manifest}: unreadable (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)); every file of WPMSD0001 is read again") \
        in again.err
    assert again.out.split(" (")[0] == first.out.split(" (")[0]  # as many files read
    assert sunpm("ingest", tree, out).out.startswith("0 files ingested")
