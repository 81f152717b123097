"""Golden-file comparison for the views (tests/golden/views/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _views_site import Golden

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "views"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """`golden(name, text)`: `text` must equal tests/golden/views/<name> byte for byte."""
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        path = GOLDEN / name
        if update:
            path.write_bytes(data)
            return
        assert path.exists(), f"{path} is missing; run pytest --update-golden and review it"
        expected = path.read_bytes()
        assert data.decode() == expected.decode(), f"differs from golden file {name}"

    return check
