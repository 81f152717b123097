"""SunSpec discovery: the unit-id sweep of docs/behaviour.md §3.2 over one `RegisterReader`.

Per unit id: find the "SunS" marker at 40000, 50000 or 0; walk the model chain from base + 2
(`ID`, `L` per header, next header at header + 2 + L, end at `ID` 0xFFFF); read the common model;
read the points that count the repetitions of 7xx groups; generate the definition file. Progress
lines go, unformatted and in the spec's exact wording, to the `DiscoveryLog` callable; the caller
dates them (docs/formats.md §11 SunSpec detection log).

Device quirks handled here: many devices do not map the end model's `L`, so a failed 2-register
read of the last header is retried as a 1-register read of `ID` alone; a device that answers every
unit id with the same identity is reported once; gateways answering exception 0x0A/0x0B for an
absent unit count as "nothing there".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from config.model import Protocol, Quality
from pipeline.drivers._base import (
    DiscoveryLog,
    DiscoveryParams,
    FoundDevice,
    ModbusRequestError,
    RegisterReader,
)

from ._models import load_model, pysunspec2_version
from .definitions import ChainModel, GeneratedDefinition, Identity, generate, measured_variables

log = logging.getLogger("sunpm.discovery")

SUNS_MARKER = (0x5375, 0x6E53)
BASE_ADDRESSES = (40000, 50000, 0)
END_MODEL_ID = 0xFFFF
MAX_MODELS = 64
_READ_HOLDING = 3
_MAX_READ = 125
#: Exception codes of a gateway reporting that no device answered behind it.
_GATEWAY_NO_DEVICE = frozenset({0x0A, 0x0B})
#: Exceptions after which a read is split (illegal address, illegal value), as polls do.
_SPLIT_EXCEPTIONS = frozenset({0x02, 0x03})
#: (offset from the first data register, registers) of Mn, Md, Opt, Vr, SN, DA in model 1.
_IDENTITY_POINTS = ((0, 16), (16, 16), (32, 8), (40, 8), (48, 16), (64, 1))


@dataclass(frozen=True, slots=True)
class SunSpecDevice:
    unit_id: int
    target: str
    base: int
    identity: Identity
    chain: tuple[ChainModel, ...]
    definition: GeneratedDefinition

    @property
    def model_ids(self) -> tuple[int, ...]:
        return tuple(m.model_id for m in self.chain)

    def found(self) -> FoundDevice:
        return FoundDevice(
            unit_id=self.unit_id, target=self.target,
            manufacturer=self.identity.manufacturer, model=self.identity.model,
            options=self.identity.options, version=self.identity.version,
            serial_number=self.identity.serial_number, models=self.model_ids,
            definition_name=self.definition.name, definition_text=self.definition.text,
            extra={"base": str(self.base)})


@dataclass(frozen=True, slots=True)
class UnitScanned:
    """Progress after each unit id (the command line's progress bar)."""

    interface: str
    unit_id: int
    found: int                      # devices found so far on this interface
    #: The link carried this unit id's requests (any answer, or a timeout on an open link);
    #: False when every request failed for want of a link (no connection, port error).
    reached: bool
    link_error: str | None          # the last "no link" error of this unit id


#: Receives a `UnitScanned` after each unit id.
ScanProgress = Callable[[UnitScanned], None]


class _Skip(Exception):
    """This unit id yields no device; the reason was already logged."""


class _Aborted(Exception):
    """`abort()` was called: the run stops before its next request."""


def decode_string(registers: Sequence[int]) -> str:
    """SunSpec string points: UTF-8, cut at the first NUL, trailing spaces removed (docs/formats.md §8.3)."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip(" ")


def _no_answer(err: ModbusRequestError) -> bool:
    if err.quality in (Quality.TIMEOUT, Quality.DISCONNECTED):
        return True
    return err.quality is Quality.EXCEPTION and err.exception_code in _GATEWAY_NO_DEVICE


def estimated_duration_s(first: int, last: int, timeout_ms: int) -> int:
    addresses = max(0, last - first + 1)
    return math.ceil(addresses * timeout_ms / 1000)


class SunSpecScan:
    """One discovery run over one link (a TCP target or an RTU bus)."""

    def __init__(self, reader: RegisterReader, *, target: str, interface: str, uid: str,
                 protocol: Protocol, timeout_ms: int, log: DiscoveryLog,
                 progress: ScanProgress | None = None) -> None:
        self._reader = reader
        self._target = target
        self._interface = interface
        self._uid = uid
        self._protocol = protocol
        self._timeout_ms = timeout_ms
        self._log = log
        self.requests = 0
        self._aborted = False
        self._progress = progress
        self._reached = False
        self._link_error: str | None = None

    def abort(self) -> None:
        """Stop after the current request (the web page's Abort)."""
        self._aborted = True

    async def run(self, first: int, last: int, max_devices: int) -> list[SunSpecDevice]:
        log.info("SunSpec detection with the models of pysunspec2 %s. interface=%s target=%s",
                 pysunspec2_version(), self._interface, self._target)
        self._log(f"Start of SunSpec detection on {self._interface}, addresses {first}-{last}, "
                  f"estimated duration {estimated_duration_s(first, last, self._timeout_ms)} s")
        found: list[SunSpecDevice] = []
        try:
            for unit_id in range(first, last + 1):
                if len(found) >= max_devices:
                    break
                self._reached, self._link_error = False, None
                try:
                    device = await self.probe(unit_id, found)
                except _Skip:
                    device = None
                if device is not None:
                    found.append(device)
                if self._progress is not None:
                    self._progress(UnitScanned(self._interface, unit_id, len(found),
                                               self._reached, self._link_error))
        except (_Aborted, asyncio.CancelledError):
            # Ctrl-C of `sunpm discover` cancels the run: the same line as the web page's Abort.
            self._log("Error: detection aborted by user")
            if not self._aborted:
                raise
        finally:
            self._log(f"End of SunSpec detection on {self._interface}. {len(found)} devices found.")
        return found

    async def _read(self, unit_id: int, address: int, count: int) -> list[int]:
        try:
            values = await self._request(unit_id, address, count)
        except ModbusRequestError as err:
            if err.other_unit is None:
                raise
            # On a bus, the late reply of a unit asked before (slower than the timeout) came
            # instead of this unit's answer: asked again, this unit answers for itself.
            values = await self._request(unit_id, address, count)
        if len(values) != count:
            raise ModbusRequestError(f"{len(values)} registers answered, {count} asked",
                                     quality=Quality.BAD_FRAME)
        return values

    async def _request(self, unit_id: int, address: int, count: int) -> list[int]:
        if self._aborted:
            raise _Aborted
        self.requests += 1
        try:
            values = await self._reader.read_registers(unit_id, _READ_HOLDING, address, count,
                                                       self._timeout_ms)
        except ModbusRequestError as err:
            if err.quality is Quality.DISCONNECTED:
                self._link_error = str(err)
            else:
                self._reached = True
            raise
        self._reached = True
        return values

    def _at(self, unit_id: int) -> str:
        return f"@{unit_id} {self._target}"

    async def probe(self, unit_id: int, found: Sequence[SunSpecDevice]) -> SunSpecDevice | None:
        """One unit id: None when nothing SunSpec answers there."""
        base = await self._find_base(unit_id)
        if base is None:
            return None
        self._log(f"SunSpec device found at {self._at(unit_id)}")
        headers = await self._walk(unit_id, base)
        if not headers or headers[0][0] != 1:
            self._log(f"Error: model 1 missing at {self._at(unit_id)}")
            raise _Skip
        identity = await self._identity(unit_id, headers[0])
        for other in found:
            if (other.target == self._target and other.identity.serial_number
                    and (other.identity.manufacturer, other.identity.model,
                         other.identity.serial_number)
                    == (identity.manufacturer, identity.model, identity.serial_number)):
                self._log(f"Error: {self._at(unit_id)} is the device found at @{other.unit_id}")
                raise _Skip
        chain = tuple([ChainModel(model_id, address, length,
                                  await self._counts(unit_id, model_id, address))
                       for model_id, address, length in headers])
        definition = generate(self._uid, identity, self._protocol, chain,
                              lambda text: self._log(f"Error: {self._at(unit_id)}: {text}"))
        if not measured_variables(definition):
            # A device with only parameter models would be imported and then record nothing.
            log.warning("%s: no measurement model; only parameters will be read",
                        self._at(unit_id))
            self._log(f"Warning: {self._at(unit_id)}: no measurement model; only parameters "
                      "will be read")
        return SunSpecDevice(unit_id=unit_id, target=self._target, base=base, identity=identity,
                             chain=chain, definition=definition)

    async def _find_base(self, unit_id: int) -> int | None:
        answered = False
        for base in BASE_ADDRESSES:
            try:
                values = await self._read(unit_id, base, 2)
            except ModbusRequestError as err:
                if not answered and _no_answer(err):
                    return None
                answered = True
                continue
            answered = True
            if tuple(values) == SUNS_MARKER:
                return base
        self._log(f"NON SUNSPEC device found at {self._at(unit_id)}")
        raise _Skip

    async def _walk(self, unit_id: int, base: int) -> list[tuple[int, int, int]]:
        """(model id, header address, L) of each model before the end marker."""
        headers: list[tuple[int, int, int]] = []
        address = base + 2
        while True:
            if address + 1 > 65535:
                # The end model's ID alone may sit in the last register.
                if address <= 65535 and await self._end_marker_alone(unit_id, address):
                    break
                self._log(f"Error: model chain passes register 65535 at {self._at(unit_id)}")
                break
            try:
                model_id, length = await self._read(unit_id, address, 2)
            except ModbusRequestError as err:
                if await self._end_marker_alone(unit_id, address):
                    break
                self._log(f"Error: model header read at {address}@{unit_id} {self._target} "
                          f"failed: {err}")
                break
            if model_id == END_MODEL_ID:
                break
            if model_id == 0:
                # No model has id 0: registers past the map that read as 0 (some devices map
                # every address) would otherwise walk on as 0:0 models up to the limit.
                self._log(f"Error: model id 0 at {address}@{unit_id} {self._target}: no end "
                          "model; the chain ends there")
                break
            if len(headers) == MAX_MODELS:
                self._log(f"Error: more than {MAX_MODELS} models at {self._at(unit_id)}")
                break
            self._log(f"Found table {model_id}:{length} at {address + 2}@{unit_id} {self._target}")
            headers.append((model_id, address, length))
            address += 2 + length
        return headers

    async def _end_marker_alone(self, unit_id: int, address: int) -> bool:
        try:
            (model_id,) = await self._read(unit_id, address, 1)
        except ModbusRequestError:
            return False
        return model_id == END_MODEL_ID

    async def _identity(self, unit_id: int, header: tuple[int, int, int]) -> Identity:
        _, address, length = header
        count = min(length, 66)
        try:
            try:
                regs = await self._read(unit_id, address + 2, count) if count else []
            except ModbusRequestError as err:
                if err.exception_code not in _SPLIT_EXCEPTIONS:
                    raise
                # Refused whole (a device that maps L 66 but not Pad, or reads fewer
                # registers at once): the identity points one by one, as polls split.
                regs = await self._identity_points(unit_id, address + 2, length)
        except ModbusRequestError as err:
            self._log(f"Error: common model read at {address + 2}@{unit_id} {self._target} "
                      f"failed: {err}")
            raise _Skip from err
        regs = regs + [0] * (66 - len(regs))
        return Identity(manufacturer=decode_string(regs[0:16]), model=decode_string(regs[16:32]),
                        options=decode_string(regs[32:40]), version=decode_string(regs[40:48]),
                        serial_number=decode_string(regs[48:64]),
                        device_address=regs[64] if length >= 65 else None)

    async def _identity_points(self, unit_id: int, start: int, length: int) -> list[int]:
        """Registers Mn .. DA of the common model, one read per point inside `length`."""
        regs: list[int] = []
        for offset, size in _IDENTITY_POINTS:
            if offset + size > length:
                break
            regs += await self._read(unit_id, start + offset, size)
        return regs

    async def _counts(self, unit_id: int, model_id: int, address: int) -> dict[str, int] | None:
        model = load_model(model_id)
        if model is None:
            return {}
        counts: dict[str, int] = {}
        for name in model.counting_points():
            offset = model.top_point_offset(name)
            if offset is None:
                continue
            try:
                (counts[name],) = await self._read(unit_id, address + offset, 1)
            except ModbusRequestError as err:
                self._log(f"Error: model {model_id} count {name} read at {address + offset}"
                          f"@{unit_id} {self._target} failed: {err}; fixed part only")
                return None
        return counts


async def discover_sunspec(reader: RegisterReader, params: DiscoveryParams, log: DiscoveryLog, *,
                           target: str, interface: str, uid: str, protocol: Protocol,
                           progress: ScanProgress | None = None) -> list[SunSpecDevice]:
    """Run the sweep of `params` (unit ids, maxDevices, timeout) over one link."""
    scan = SunSpecScan(reader, target=target, interface=interface, uid=uid, protocol=protocol,
                       timeout_ms=params.timeout_ms, log=log, progress=progress)
    return await scan.run(params.first_address, params.last_address, params.max_devices)
