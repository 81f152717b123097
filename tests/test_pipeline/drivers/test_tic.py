"""TIC decoding of captured frames, every malformed case, fuzzing, and the reader on a pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tic_ptys import pty_opener
from waiting import wait_until

from config.model import Action, DefinitionFile, Device, Protocol, Quality, Variable
from pipeline.clock import ManualClock
from pipeline.drivers._base import LinkSettings, Reading, ReadPlan
from pipeline.drivers.modbus.trace import FrameTrace, format_trace_line
from pipeline.drivers.registry import read_plans
from pipeline.drivers.tic import (
    GroupFault,
    LabelValue,
    PortOpener,
    TicDecoder,
    TicDriver,
    TicGroup,
    TicMode,
    TicReader,
    decode_capture,
    encode_frame,
    encode_group,
    parse_group,
)

DATA = Path(__file__).parent / "data"


def test_spec_examples_pass_their_checksums() -> None:
    assert parse_group(b"ADCO 031664001115 3") == TicGroup("ADCO", "031664001115", None,
                                                            TicMode.HISTORIC)
    assert parse_group(b"ADSC\t031664001115\t)") == TicGroup("ADSC", "031664001115", None,
                                                              TicMode.STANDARD)
    assert parse_group(b"SMAXSN\tE210205083000\t07360\t/") == TicGroup(
        "SMAXSN", "07360", "E210205083000", TicMode.STANDARD)


def test_historic_capture_decodes_with_checksums_verified() -> None:
    frames, counters = decode_capture((DATA / "tic_historic.bin").read_bytes())
    assert [len(f.groups) for f in frames] == [10, 9, 4, 10, 2]
    assert [f.interrupted for f in frames] == [False, False, True, False, True]
    assert frames[0].values() == {
        "ADCO": "031664001115", "OPTARIF": "BASE", "ISOUSC": "30", "BASE": "000002080",
        "PTEC": "TH..", "IINST": "004", "IMAX": "090", "PAPP": "00910", "HHPHC": "A",
        "MOTDETAT": "000000"}
    assert "BASE" not in frames[1].values() and frames[1].checksum_errors == 1
    assert frames[2].malformed == 1          # PTEC cut by EOT
    assert frames[3].values()["BASE"] == "000002083"
    assert {f.mode for f in frames} == {TicMode.HISTORIC}
    assert counters.as_dict() == {"frames": 5, "interrupted": 2, "validGroups": 35,
                                  "checksumErrors": 1, "malformed": 2, "noise": 3}


def test_standard_capture_decodes_with_horodates_and_spaces_in_data() -> None:
    frames, counters = decode_capture((DATA / "tic_standard.bin").read_bytes())
    assert [len(f.groups) for f in frames] == [30, 27, 30, 7, 30]
    first = {g.label: g for g in frames[0].groups}
    assert first["DATE"].data == "" and first["DATE"].horodate == "E210205083002"
    assert first["SMAXSN"].data == "07360" and first["SMAXSN"].horodate == "E210205083000"
    assert first["NGTF"].data == "      BASE      "
    assert first["PJOURF+1"].data == "00008001 NONUTILE NONUTILE"
    assert (frames[1].checksum_errors, frames[1].malformed) == (1, 2)
    assert "IRMS1" not in frames[1].values() and "SMAXSN" not in frames[1].values()
    assert frames[3].interrupted and frames[4].values()["EAST"] == "000001504"
    assert counters.valid_groups == 124 and counters.noise == 0


@pytest.mark.parametrize(("content", "fault"), [
    (b"ADCO 031664001115\t3", GroupFault.CHECKSUM),                    # standard span differs
    (b"ADCO 031664001115 4", GroupFault.CHECKSUM),
    (b"ADCO 031664001115", GroupFault.MALFORMED),                       # no separator before CR
    (b"ADCO03166400111513", GroupFault.MALFORMED),
    (b"3", GroupFault.MALFORMED),
    (b"", GroupFault.MALFORMED),
    # 'adco' sums to 'ADCO' modulo 64: the checksum passes, the label does not.
    (b"adco 031664001115 3", GroupFault.MALFORMED),
])
def test_bad_groups_are_classified(content: bytes, fault: GroupFault) -> None:
    assert parse_group(content) is fault


def _valid(label: str, data: str, mode: TicMode, horodate: str | None = None) -> bytes:
    return encode_group(label, data, mode, horodate)[1:-1]


def _with_checksum(span: bytes, separator: bytes) -> bytes:
    checked = span if separator == b" " else span + separator
    tail = separator if separator == b" " else b""
    return span + tail + bytes([(sum(checked) & 0x3F) + 0x20])


@pytest.mark.parametrize("content", [
    _with_checksum(b"ADCO", b" "),                                     # separator missing
    _with_checksum(b"ADCO 0316 64001115", b" "),                       # historic data with SP
    _with_checksum(b"ADSC\tE210205083000\t1\t2", b"\t"),               # extra fields
    _with_checksum(b"ADSC", b"\t"),                                    # data field missing
    _valid("ABCDEFGHIJKLMNOPQ", "1", TicMode.HISTORIC),                # label of 17
    _valid("AD-C+0", "x\x7f", TicMode.STANDARD),                        # data outside 0x20..0x7E
    _valid("SMAXSN", "1", TicMode.STANDARD, "X210205083000"),           # season letter
    _valid("SMAXSN", "1", TicMode.STANDARD, "E2102050830a0"),           # not digits
])
def test_groups_with_a_good_checksum_but_bad_fields_are_malformed(content: bytes) -> None:
    assert parse_group(content) is GroupFault.MALFORMED


def test_label_of_16_and_empty_standard_data_are_valid() -> None:
    assert isinstance(parse_group(_valid("ABCDEFGHIJKLMNOP", "1", TicMode.HISTORIC)), TicGroup)
    assert parse_group(_valid("DATE", "", TicMode.STANDARD, "h210205083000")) == TicGroup(
        "DATE", "", "h210205083000", TicMode.STANDARD)


def test_group_is_checked_with_its_own_modes_span_only() -> None:
    # A standard-mode checksum on a historic-looking group does not pass.
    span = b"ADCO 031664001115 "
    wrong = span + bytes([(sum(span) & 0x3F) + 0x20])
    assert parse_group(wrong) is GroupFault.CHECKSUM


def test_group_over_256_bytes_is_dropped_and_the_next_one_kept() -> None:
    long_group = b"\n" + b"A" * 300 + b"\r"
    frame = b"\x02" + long_group + encode_group("PAPP", "00100", TicMode.HISTORIC) + b"\x03"
    frames, counters = decode_capture(frame)
    assert frames[0].values() == {"PAPP": "00100"}
    assert counters.malformed == 1


def test_lf_before_cr_cuts_the_group() -> None:
    frame = (b"\x02\nBASE 0001" + encode_group("PAPP", "00100", TicMode.HISTORIC) + b"\x03")
    frames, counters = decode_capture(frame)
    assert frames[0].values() == {"PAPP": "00100"} and counters.malformed == 1


def test_bytes_before_the_first_stx_are_not_noise_but_later_ones_are() -> None:
    data = b"garbage\r\n" + encode_frame([("PAPP", "1")], TicMode.HISTORIC) + b"xy"
    _, counters = decode_capture(data)
    assert counters.noise == 2


_frames_bytes = st.lists(st.sampled_from([
    encode_group("PAPP", "00100", TicMode.HISTORIC), encode_group("SINSTS", "00120",
                                                                  TicMode.STANDARD),
    b"\x02", b"\x03", b"\x04", b"\n", b"\r", b"\t", b" ", b"A"]), max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), _frames_bytes),
       st.sampled_from([None, TicMode.HISTORIC, TicMode.STANDARD]))
def test_decoder_never_raises_and_counts_every_group(data: bytes, mode: TicMode | None) -> None:
    frames, counters = decode_capture(data, mode)
    assert counters.frames == len(frames)
    assert counters.valid_groups == sum(len(f.groups) for f in frames)
    assert counters.checksum_errors == sum(f.checksum_errors for f in frames)
    assert counters.malformed == sum(f.malformed for f in frames)


@settings(max_examples=200, deadline=None)
@given(_frames_bytes, st.lists(st.integers(1, 50), max_size=20))
def test_decoding_does_not_depend_on_how_the_input_is_chunked(data: bytes,
                                                                cuts: list[int]) -> None:
    whole, _ = decode_capture(data)
    decoder = TicDecoder()
    frames = []
    pos = 0
    for cut in cuts:
        frames += decoder.feed(data[pos:pos + cut])
        pos += cut
    frames += decoder.feed(data[pos:]) + decoder.finish()
    assert frames == whole


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=40),
       st.sampled_from(["ADCO", "EAST", "SINSTS", "A+B-9"]))
def test_encoded_groups_parse_back(data: str, label: str) -> None:
    assert parse_group(_valid(label, data, TicMode.STANDARD)) == TicGroup(
        label, data, None, TicMode.STANDARD)
    if data:
        assert parse_group(_valid(label, data, TicMode.HISTORIC)) == TicGroup(
            label, data, None, TicMode.HISTORIC)


# --------------------------------------------------------------------------- reader on a pty


@contextlib.contextmanager
def _pty_link(tmp_path: Path) -> Iterator[tuple[int, Path, PortOpener]]:
    """A pty pair; the reader opens `link`, a symlink to the slave, which tests may remove,
    with `tic_ptys.pty_opener` (8N1: a pty refuses 7E1)."""
    master, slave = pty.openpty()
    link = tmp_path / "ttyTIC"
    link.symlink_to(os.ttyname(slave))
    try:
        yield master, link, pty_opener
    finally:
        os.close(master)
        os.close(slave)


def _var(index: int, label: str) -> Variable:
    return Variable(line=index + 1, index=index, info1=label, info2="", info3="", info4="",
                    name=label, tag="", coef_a=Decimal(1), coef_b=Decimal(0), unit="",
                    action=Action.INSTANT, tic_label=label)


def _plan(*labels: str) -> ReadPlan:
    variables = tuple(_var(k, label) for k, label in enumerate(labels, start=1))
    definition = DefinitionFile(file_name="U_TIC_LINKY.csv", protocol=Protocol.TIC,
                                category="Meter", manufacturer="Enedis", model="Linky",
                                variables=variables, sha256="0" * 64)
    return ReadPlan(definition=definition, variables=variables)


TIC1 = Device(line=5, index="TIC1", interface="", name="Linky", address=None,
              serial_number="031664001115", parameters="")


async def _until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    await wait_until(condition, timeout_s)


@contextlib.asynccontextmanager
async def _driver(reader: TicReader) -> AsyncIterator[TicDriver]:
    driver = TicDriver(reader)
    await driver.open(LinkSettings())
    try:
        yield driver
    finally:
        await driver.close()


async def test_reader_detects_historic_mode_and_driver_reads_labels(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sunpm.tic")
    frame = encode_frame([("ADCO", "031664001115"), ("BASE", "000002080"), ("PAPP", "00910"),
                          ("IINST", "004")], TicMode.HISTORIC)
    with _pty_link(tmp_path) as (master, link, opener):
        traces: list[FrameTrace] = []
        reader = TicReader(str(link), detection_slot_s=0.3, opener=opener, trace=traces.append)
        async with _driver(reader) as driver:
            # First slot is 9600 (standard): historic groups fail there, then 1200 finds them.
            async def feed() -> None:
                while True:
                    os.write(master, frame)
                    await asyncio.sleep(0.05)
            feeder = asyncio.create_task(feed(), name="tic-feed")
            try:
                await _until(lambda: reader.mode is TicMode.HISTORIC)
                await driver.read(TIC1, _plan("BASE"))          # starts a fresh poll period
                await _until(lambda: reader.values["BASE"].received_ns
                             > driver._last_poll_ns)  # type: ignore[operator]
                readings = await driver.read(TIC1, _plan("BASE", "PAPP", "EAST"))
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            assert readings.values[1].value == "000002080"
            assert readings.values[1].quality is Quality.GOOD
            assert readings.values[2].value == "00910"
            assert readings.values[3].quality is Quality.TIMEOUT
            # Nothing received since that poll: the labels were not seen in this poll period.
            later = await driver.read(TIC1, _plan("BASE", "PAPP", "EAST"))
            assert later.values[1].quality is Quality.TIMEOUT
    assert "historic mode detected at 1200 baud" in caplog.messages
    good = [t for t in traces if t.data == frame]
    assert good and good[0].interface == "tic"
    assert format_trace_line(good[0]).split(";", 1)[1].startswith("<= 02 0A 41 44 43 4F 20")


async def test_accessory_loss_and_return_are_detected(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sunpm.tic")
    events: list[str] = []
    with _pty_link(tmp_path) as (master, link, opener):
        reader = TicReader(str(link), baud=9600, on_accessory=events.append, opener=opener)
        async with _driver(reader) as driver:
            await _until(lambda: reader.present)
            target = os.readlink(link)
            link.unlink()
            await _until(lambda: reader.lost)
            readings = await driver.read(TIC1, _plan("EAST"))
            assert readings.values[1].quality is Quality.DISCONNECTED
            link.symlink_to(target)
            await _until(lambda: not reader.lost and reader.present)
            os.write(master, encode_frame([("EAST", "000001500")], TicMode.STANDARD))
            await _until(lambda: "EAST" in reader.values)
            readings = await driver.read(TIC1, _plan("EAST"))
            assert readings.values[1].value == "000001500"
    assert events == ["loss", "return"]
    assert caplog.messages.count("Loss of ICT accessory") == 1
    assert caplog.messages.count("Return ICT accessory") == 1


async def test_a_meter_unplugged_mid_frame_keeps_its_valid_groups_and_counts_the_cut(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sunpm.tic")
    # docs/behaviour.md §2.9 item 1: the end of the input interrupts the frame; groups already
    # valid are kept, the cut group is dropped, and the frame shows in the trace and counters.
    frame = encode_frame([("ADSC", "031664001115"), ("EAST", "000001500"), ("SINSTS", "00910")],
                         TicMode.STANDARD)
    cut = frame[:frame.index(b"SINSTS") + 4]
    with _pty_link(tmp_path) as (master, link, opener):
        traces: list[FrameTrace] = []
        reader = TicReader(str(link), baud=9600, opener=opener, trace=traces.append)
        async with _driver(reader) as driver:
            await _until(lambda: reader.present)
            os.write(master, cut)
            await _until(lambda: "EAST" in reader.values)
            link.unlink()
            await _until(lambda: reader.lost)
            assert (await driver.read(TIC1, _plan("EAST"))).values[1].quality \
                is Quality.DISCONNECTED
    assert reader.values["ADSC"].data == "031664001115" and "SINSTS" not in reader.values
    counters = reader.counters.as_dict()
    assert counters["frames"] == 1 and counters["interrupted"] == 1
    assert counters["validGroups"] == 2 and counters["malformed"] == 1
    assert [t.data for t in traces] == [cut]
    # One line for the episode: the loss, not also a port failure.
    assert [r.getMessage() for r in caplog.records if r.levelname != "INFO"] == [
        "Loss of ICT accessory"]


async def test_a_reader_that_opens_but_fails_every_read_is_one_loss_not_one_a_second(
        tmp_path: Path) -> None:
    # A reader that enumerates but fails its reads (a broken adapter): the port opens every
    # second and fails at once. The accessory's loss is an alarm: once, not a loss and a return
    # at every retry.
    path = tmp_path / "ttyTIC"
    path.write_bytes(b"")
    opened = 0

    async def failing_opener(_: str, __: int) -> tuple[asyncio.StreamReader, Callable[[], None]]:
        nonlocal opened
        opened += 1
        stream = asyncio.StreamReader()
        stream.feed_eof()
        return stream, lambda: None

    events: list[str] = []
    reader = TicReader(str(path), baud=9600, on_accessory=events.append, opener=failing_opener)
    task = asyncio.create_task(reader.run(), name="tic:failing")
    try:
        await _until(lambda: opened >= 3, timeout_s=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert events == ["loss"]
    assert reader.lost and not reader.present


async def test_a_reader_missing_at_start_is_lost_only_after_60_s(tmp_path: Path) -> None:
    clock = ManualClock(wall_ns=1_767_225_600 * 10**9)       # 2026-01-01 00:00 UTC
    events: list[str] = []
    reader = TicReader(str(tmp_path / "ttyUSB0"), baud=9600, on_accessory=events.append,
                       clock=clock)
    task = asyncio.create_task(reader.run(), name="tic-missing")
    try:
        for _ in range(59):                       # the path is checked every second
            await clock.advance(1.0)
        assert not reader.lost and events == []
        await clock.advance(2.0)
        assert reader.lost
        for _ in range(5):
            await clock.advance(1.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert events == ["loss"]


async def test_a_meter_address_other_than_serial_number_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="sunpm.tic")
    reader = TicReader("/dev/null-tic")
    reader.present = True
    reader.values["ADSC"] = LabelValue("041664001116", None, reader.clock.monotonic_ns())
    driver = TicDriver(reader)
    for _ in range(3):
        await driver.read(TIC1, _plan("ADSC"))
    assert caplog.messages == [
        "Meter address 041664001116 differs from serialNumber 031664001115. device=TIC1"]


async def test_the_meter_address_is_read_as_a_parameter_in_the_poll_window() -> None:
    # The discovered file makes the address action 1: the poller reads the parameter plan right
    # after a good poll, and the labels of that poll period are its values.
    clock = ManualClock(wall_ns=1_767_225_600 * 10**9)
    adco = _var(1, "ADCO")
    adco = Variable(**{**{f: getattr(adco, f) for f in adco.__dataclass_fields__},
                       "action": Action.PARAMETER})
    base = _var(2, "BASE")
    definition = DefinitionFile(file_name="U_TIC_LINKY.csv", protocol=Protocol.TIC,
                                category="Meter", manufacturer="Enedis", model="Linky",
                                variables=(adco, base), sha256="0" * 64)
    plan, parameters = read_plans(definition, 0)
    assert parameters is not None and parameters.variables == (adco,)
    reader = TicReader("/dev/null-tic", clock=clock)
    reader.present = True
    driver = TicDriver(reader)
    await clock.advance(10)
    reader.values["ADCO"] = LabelValue("031664001115", None, clock.monotonic_ns())
    reader.values["BASE"] = LabelValue("000002080", None, clock.monotonic_ns())
    await clock.advance(1)
    assert (await driver.read(TIC1, plan)).values[2] == Reading("000002080", Quality.GOOD)
    assert (await driver.read(TIC1, parameters)).values[1] == Reading("031664001115",
                                                                       Quality.GOOD)
    # Nothing arrived since: the next poll and a later parameter read see no label.
    await clock.advance(10)
    assert (await driver.read(TIC1, plan)).values[2].quality is Quality.TIMEOUT
    assert (await driver.read(TIC1, parameters)).values[1].quality is Quality.TIMEOUT


def test_frames_keep_their_raw_bytes_and_a_frame_without_end_is_cut() -> None:
    frame = encode_frame([("PAPP", "00100"), ("IINST", "004")], TicMode.HISTORIC)
    frames, _ = decode_capture(b"xx" + frame + b"\x02\nPAPP" + b"\x04")
    assert frames[0].raw == frame and frames[1].raw == b"\x02\nPAPP\x04"
    group = encode_group("PAPP", "00100", TicMode.HISTORIC)
    endless = b"\x02" + group * 2000
    frames, counters = decode_capture(endless)
    assert frames[0].interrupted and len(frames[0].raw) <= 16385
    assert counters.noise > 0          # the rest, outside any frame


async def test_a_port_that_keeps_failing_to_open_warns_once_not_every_retry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A regular file is no serial port: pyserial fails to configure it, as it fails on a tty
    # the service may not open (not in the dialout group). Retried every second, for hours.
    caplog.set_level("DEBUG", logger="sunpm.tic")
    not_a_tty = tmp_path / "ttyTIC"
    not_a_tty.write_bytes(b"")
    reader = TicReader(str(not_a_tty))
    task = asyncio.create_task(reader.run(), name="tic:test")
    try:
        await _until(lambda: sum(r.message.startswith("TIC port read failed")
                                 for r in caplog.records) >= 3, timeout_s=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failures = [r for r in caplog.records if r.message.startswith("TIC port read failed")]
    assert [r.levelname for r in failures[:3]] == ["WARNING", "DEBUG", "DEBUG"]
    assert reader.lost and not reader.present


async def test_a_meter_plugged_back_is_read_first_at_the_speed_its_mode_was_detected_at(
        tmp_path: Path) -> None:
    # Detected historic (1200 Bd), unplugged for a few seconds and plugged back: the reader
    # opens the port at 1200 again, not at 9600 where a historic meter sends nothing readable
    # until the 60 s without a valid group restart the detection.
    frame = encode_frame([("ADCO", "031664001115"), ("BASE", "000002080")], TicMode.HISTORIC)
    with _pty_link(tmp_path) as (master, link, opener):
        bauds: list[int] = []

        async def recording(path: str, baud: int
                            ) -> tuple[asyncio.StreamReader, Callable[[], None]]:
            bauds.append(baud)
            return await opener(path, baud)

        reader = TicReader(str(link), detection_slot_s=0.3, opener=recording)

        async def feed() -> None:
            while True:
                os.write(master, frame)
                await asyncio.sleep(0.05)

        async with _driver(reader):
            feeder = asyncio.create_task(feed(), name="tic-feed")
            try:
                await _until(lambda: reader.mode is TicMode.HISTORIC)
                target = os.readlink(link)
                link.unlink()
                await _until(lambda: reader.lost)
                opened = len(bauds)
                link.symlink_to(target)
                await _until(lambda: len(bauds) > opened and reader.present)
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
        assert bauds[opened] == 1200
        assert reader.mode is TicMode.HISTORIC
