"""Which `/BIN` package is newer than the running version (docs/behaviour.md §4.2 step 6)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.service.firmware import newest_offer, version_key


def test_newest_package_above_the_running_version() -> None:
    names = ["wgapp_1.2.0.spm", "wgapp_1.10.0.spm", "wgapp_1.9.9.spm", "wgapp_1.10.0.spm.md5",
             "readme.txt", "wgapp_x.spm", "wgapp_2.0.spm.tmp"]
    assert newest_offer(names, "1.2.0") == ("wgapp_1.10.0.spm", "1.10.0")
    assert newest_offer(names, "1.10.0") is None
    assert newest_offer([], "0") is None
    assert version_key("1.0.0.dev3") == (1, 0, 0, 0)


@given(st.lists(st.integers(0, 999), min_size=1, max_size=4),
       st.lists(st.integers(0, 999), min_size=1, max_size=4))
def test_offer_is_chosen_by_numeric_order(offered: list[int], running: list[int]) -> None:
    version = ".".join(map(str, offered))
    chosen = newest_offer([f"wgapp_{version}.spm"], ".".join(map(str, running)))
    assert (chosen is not None) == (tuple(offered) > tuple(running))
