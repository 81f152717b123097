"""TIC detection (`discoverDevices` protocol `tic`) and the `TIC1` definition file it generates.

Spec: docs/behaviour.md §3.6. Listen on `TIC_Port` 10 s at 9600 baud (standard mode), then 10 s at
1200 (historic); the meter is found once 3 valid groups arrive in a row, and the listening goes on
to the end of that frame so every label the meter sends is seen.
"""

from __future__ import annotations

import asyncio
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from config.model import Daq, Device
from pipeline.drivers.tic import (
    DETECTION_GROUPS,
    PortOpener,
    TicDecoder,
    TicGroup,
    TicMode,
    open_serial,
)

LISTEN_S: Final = 10.0
_ADDRESS_LABELS: Final = ("ADCO", "ADSC")

#: (unit, exact labels, label prefixes) of docs/behaviour.md §3.6.
_UNITS: Final[tuple[tuple[str, frozenset[str], tuple[str, ...]], ...]] = (
    ("Wh", frozenset({"BASE", "HCHC", "HCHP", "EJPHN", "EJPHPM", "EAST", "EAIT"}),
     ("BBRH", "EASF", "EASD")),
    ("varh", frozenset(), ("ERQ",)),
    ("A", frozenset({"ISOUSC", "ADPS"}), ("IINST", "IMAX", "ADIR", "IRMS")),
    ("V", frozenset(), ("URMS", "UMOY")),
    ("VA", frozenset({"PAPP"}), ("SINST", "SMAX")),
    ("kVA", frozenset({"PREF", "PCOUP"}), ()),
    ("W", frozenset({"PMAX"}), ("CCASN", "CCAIN")),
)


@dataclass(frozen=True, slots=True)
class TicDetection:
    mode: TicMode
    baud: int
    address: str                          # ADCO / ADSC data, "" when the meter sent none
    #: Every label seen, in order of first appearance, with its last data.
    labels: Mapping[str, str]


def unit_of(label: str) -> str:
    for unit, exact, prefixes in _UNITS:
        if label in exact or label.startswith(prefixes):
            return unit
    return ""


def action_of(label: str, data: str) -> int:
    if label == "DATE":
        return 0
    if label in _ADDRESS_LABELS:
        return 1
    return 4 if data.isdigit() else 1


def definition_name(uid: str, mode: TicMode) -> str:
    return f"{uid}_TIC_LINKY.csv" if mode is TicMode.HISTORIC else f"{uid}_TIC_LINKY_STD.csv"


def definition_text(detection: TicDetection) -> str:
    lines = ["tic;Meter;Enedis;Linky"]
    for k, (label, data) in enumerate(detection.labels.items(), start=1):
        lines.append(f"{k};{label};;;;{label};;1;0;{unit_of(label)};{action_of(label, data)}")
    return "\n".join(lines) + "\n"


def tic_device(daq: Daq, detection: TicDetection, def_file: str) -> Device:
    """The `TIC1` row an import adds; refused when one exists (the manual)."""
    if any(d.index == "TIC1" for d in daq.devices):
        raise TicAlreadyConfigured("discoverDevices: TIC1 is already configured; delete it first")
    line = max((d.line for d in daq.devices), default=0) + 1
    return Device(line=line, index="TIC1", interface="", name="Linky", address=None,
                  acq_period_s=600, serial_number=detection.address,
                  parameters=str(detection.baud), category="Meter", model="Linky",
                  def_file=def_file)


def _why(err: Exception) -> str:
    """`Invalid argument (errno 22)` from an OSError or a termios.error (errno, text)."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror} (errno {err.errno})"
    if len(err.args) == 2 and isinstance(err.args[1], str):
        return f"{err.args[1]} (errno {err.args[0]})"
    return str(err) or type(err).__name__


class TicAlreadyConfigured(ValueError):
    pass


async def detect_tic(path: str, *, opener: PortOpener = open_serial, listen_s: float = LISTEN_S,
                     clock: Callable[[], float] = time.monotonic,
                     open_errors: list[str] | None = None) -> TicDetection | None:
    """Listen at 9600 then 1200 baud; None when no meter answers (result 0).

    `open_errors` gets why the port could not be opened at a speed, so a caller can tell a port
    it cannot use (no rights, no 7E1) from a port where no meter talks."""
    for mode in (TicMode.STANDARD, TicMode.HISTORIC):
        found = await _listen(path, mode, opener, listen_s, clock, open_errors)
        if found is not None:
            return found
    return None


async def _listen(path: str, mode: TicMode, opener: PortOpener, listen_s: float,
                  clock: Callable[[], float], open_errors: list[str] | None) -> TicDetection | None:
    try:
        reader, close = await opener(path, mode.baud)
    except (OSError, termios.error) as err:
        if open_errors is not None:
            open_errors.append(_why(err))
        return None
    decoder = TicDecoder(mode)
    labels: dict[str, str] = {}
    detected = False

    def on_group(group: TicGroup) -> None:
        nonlocal detected
        labels[group.label] = group.data
        if decoder.consecutive_valid >= DETECTION_GROUPS:
            detected = True

    decoder.on_group = on_group
    deadline = clock() + listen_s
    try:
        while (remaining := deadline - clock()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    chunk = await reader.read(256)
            except TimeoutError:
                break
            if not chunk:
                break
            frames = decoder.feed(chunk)
            if detected and any(not f.interrupted for f in frames):
                break
    except OSError:
        return None
    finally:
        close()
    if not detected:
        return None
    address = next((labels[a] for a in _ADDRESS_LABELS if a in labels), "")
    return TicDetection(mode=mode, baud=mode.baud, address=address, labels=labels)
