"""The Python block of exporters/transports/README.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[3] / "exporters" / "transports" / "README.md"


async def test_readme_example_uploads_to_a_folder(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102  # our own README
    (tmp_path / "DATA").mkdir()
    upload_one = namespace["upload_one"]
    assert callable(upload_one)
    await upload_one(b"data", tmp_path)
    assert (tmp_path / "DATA" / "WPM00C44F_IO_210202_084443.csv.gz").read_bytes() == b"data"
