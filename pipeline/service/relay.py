"""The I/O relay's last commanded state across restarts (docs/behaviour.md §2.10: "the last
commanded state is restored at start").

Each state the relay took on a command (`setRelay` from a command, SMS or script, `writeVariable`
of the relay from a command, the web UI or a script; `IoDriver.on_relay`) journals a `relay` event
(`{"state": 0|1}`); replaying folds it into `state` snapshots (store.state.reduce_relay), so the
journal's quota never loses it. At start the latest one is driven again: the simulator's relay
takes it, a Modbus I/O module's coil is written (one attempt, a WARNING if the module does not
take it; its own coil usually kept the state anyway).
"""

from __future__ import annotations

import json
import logging

from config.errors import SunpmError
from pipeline.drivers.io import IoDriver
from pipeline.service.saved import newest_saved
from store.events import EventBodyError, JsonValue, RelayCommanded
from store.log import Log

log = logging.getLogger("sunpm.io")

KIND = "relay"


def relay_body(state: int) -> dict[str, JsonValue]:
    return RelayCommanded(state=state).to_fields()


async def last_commanded(store: Log) -> int | None:
    """The relay state last commanded: its latest `relay` event, else the latest `state`
    snapshot's copy; None when the relay was never commanded."""
    return await newest_saved(store, KIND, _commanded)


def _commanded(kind: str, body_text: str) -> int | None:
    try:
        body = json.loads(body_text)
        if kind == KIND:
            return RelayCommanded.from_fields(body).state
        extra = body.get("extra") if isinstance(body, dict) else None
        saved = extra.get("relay") if isinstance(extra, dict) else None
        if saved is not None:
            return RelayCommanded.from_fields({"state": saved}).state
    except (ValueError, EventBodyError):
        pass                            # a damaged body: an older event may still say it
    return None


async def restore_relay(store: Log, driver: IoDriver) -> int | None:
    """Drive the relay to its last commanded state; the state, or None when there was none."""
    state = await last_commanded(store)
    if state is None:
        return None
    try:
        await driver.set_relay(state)
    except SunpmError as err:
        log.warning("Relay state %d not restored: %s", state, err)
        return state
    log.info("Relay restored to its last commanded state %d", state)
    return state
