"""Each refusal of the shared discovery check (docs/behaviour.md §3.1) lands beside its field."""

from __future__ import annotations

import pytest

from config.model import Daq
from pipeline.drivers._base import DiscoveryParams
from pipeline.drivers.discovery import DiscoveryRefused, interfaces_to_scan
from pipeline.web.discovery import _refusal_field


@pytest.mark.parametrize(("params", "field"), [
    (DiscoveryParams(interface="ethernet1"), "ip"),
    (DiscoveryParams(interface="ethernet1", ip="plant.example"), "ip"),
    (DiscoveryParams(interface="ethernet1", ip="127.0.0.1", first_address=0), "firstAddress"),
    (DiscoveryParams(interface="serial1"), "interface"),
])
def test_a_refusal_names_its_field(params: DiscoveryParams, field: str) -> None:
    with pytest.raises(DiscoveryRefused) as refused:
        interfaces_to_scan(params, Daq())
    assert _refusal_field(str(refused.value)) == field
