"""The card mirror follows `SD_MirrorPath` through configuration changes (docs/behaviour.md §12):
set while running, it starts; moved, it mirrors to the new card; emptied, it stops.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, wait_for

from config import parse_config_ini, render_config_ini

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


def _set_mirror(config_dir: Path, path: str) -> None:
    ini = config_dir / "CONFIG" / f"{UID}_config.ini"
    cfg = parse_config_ini(ini.read_bytes(), ini.name).value
    ini.write_bytes(render_config_ini(cfg.with_value("SD_MirrorPath", path)))


def _snapshot_on(card: Path) -> bool:
    return any(card.glob(f"config/*/CONFIG/{UID}_config.ini"))


async def test_the_mirror_starts_moves_and_stops_with_the_configuration(tmp_path: Path) -> None:
    first, second = tmp_path / "card1", tmp_path / "card2"
    first.mkdir()
    second.mkdir()
    async with running_gateway(tmp_path) as plant:
        gateway = plant.gateway
        assert gateway.mirror is None

        for card in (first, second):
            _set_mirror(plant.config_dir, str(card))
            gateway.config_written()
            await wait_for(lambda card=card: gateway.mirror is not None  # type: ignore[misc]
                           and gateway.mirror.card == card, 20, f"the mirror on {card.name}")
            await wait_for(lambda card=card: _snapshot_on(card), 20,  # type: ignore[misc]
                           f"a configuration snapshot on {card.name}")
            sd = (await gateway.status())["sd"]
            assert sd == {"path": str(card), "state": "ok", "error": None}

        _set_mirror(plant.config_dir, "")
        gateway.config_written()
        await wait_for(lambda: gateway.mirror is None, 20, "the mirror stopped")
        assert "sd" not in await gateway.status()
        mirrored = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert mirrored, "the first card kept what was mirrored to it"
