"""Small rules of the facade that pages rely on."""

from __future__ import annotations

import pytest

from pipeline.web.facade import _numeric


@pytest.mark.parametrize(("value", "charted"), [
    (229.4, True), (0, True), (None, True),
    # TIC values are verbatim text: an index or a current is a number, a tariff period is not.
    ("015276039", True), ("002", True), ("-3.5", True),
    ("TH..", False), ("HP..", False), ("", False), ("NaN", False), ("inf", False),
])
def test_a_live_value_is_charted_when_it_is_a_number(value: float | str | None,
                                                     charted: bool) -> None:
    assert _numeric(value) is charted
