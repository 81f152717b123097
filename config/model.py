"""Typed, frozen models of a site's configuration (docs/formats.md §4-§8).

Parsers build these once, at the boundary; everything inside sunpm trusts them. Every model keeps
the line it came from so later cross-file checks can still name file, line and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Final

# --------------------------------------------------------------------------- definition files


class Protocol(StrEnum):
    """Line 1 of a definition file; any case on read, this spelling written."""

    MODBUS_RTU = "modbusRTU"
    MODBUS_TCP = "modbusTCP"
    IO = "io"
    TIC = "tic"

    @property
    def is_modbus(self) -> bool:
        return self in (Protocol.MODBUS_RTU, Protocol.MODBUS_TCP)


class Action(IntEnum):
    NOT_READ = 0
    PARAMETER = 1
    MIN_MAX_MEAN = 2
    INSTANT = 4
    ALARM_ON_CHANGE = 8
    ALARM_AND_PARAMETER = 9

    @property
    def is_polled(self) -> bool:
        """Read at every poll and recorded (docs/behaviour.md §2.2)."""
        return self in (Action.MIN_MAX_MEAN, Action.INSTANT, Action.ALARM_ON_CHANGE,
                        Action.ALARM_AND_PARAMETER)

    @property
    def is_parameter(self) -> bool:
        return self in (Action.PARAMETER, Action.ALARM_AND_PARAMETER)

    @property
    def raises_alarm(self) -> bool:
        return self in (Action.ALARM_ON_CHANGE, Action.ALARM_AND_PARAMETER)


class RegisterKind(IntEnum):
    """`Info1` of a Modbus variable; the value is also the read function code."""

    COIL = 1
    DISCRETE_INPUT = 2
    HOLDING_REGISTER = 3
    INPUT_REGISTER = 4

    @property
    def is_bit(self) -> bool:
        return self in (RegisterKind.COIL, RegisterKind.DISCRETE_INPUT)

    @property
    def read_function(self) -> int:
        return int(self)


class DataType(StrEnum):
    """`Info3` type of a register variable, canonical spelling (any case on read)."""

    U8 = "U8"
    I8 = "I8"
    U16 = "U16"
    I16 = "I16"
    U32 = "U32"
    I32 = "I32"
    U64 = "U64"
    I64 = "I64"
    F32 = "F32"
    F64 = "F64"
    STRING = "String"
    BITS = "Bits"
    IP = "IP"
    IPV6 = "IPV6"
    MAC = "MAC"


#: Registers a value of each fixed-size type spans (String: from its byte count).
TYPE_REGISTERS: Final[Mapping[DataType, int]] = {
    DataType.U8: 1, DataType.I8: 1, DataType.U16: 1, DataType.I16: 1,
    DataType.U32: 2, DataType.I32: 2, DataType.U64: 4, DataType.I64: 4,
    DataType.F32: 2, DataType.F64: 4, DataType.BITS: 1,
    DataType.IP: 2, DataType.IPV6: 8, DataType.MAC: 3,
}

#: Types that may carry a SunSpec scale factor (`Info4`) or be one.
INTEGER_TYPES: Final[frozenset[DataType]] = frozenset({
    DataType.U8, DataType.I8, DataType.U16, DataType.I16,
    DataType.U32, DataType.I32, DataType.U64, DataType.I64,
})


class ByteOrder(StrEnum):
    """`Info3` suffix: `_B` swaps bytes in each register, `_W` reverses register order."""

    BIG_ENDIAN = ""
    SWAP_BYTES = "_B"
    SWAP_WORDS = "_W"
    SWAP_BOTH = "_WB"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusPoint:
    """Where and how a Modbus variable lives on the wire (`Info1`..`Info3` parsed).

    `address` is the zero-based PDU address. For coils and discrete inputs the point is one bit and
    `data_type` is None (their `Info3` is not checked, docs/formats.md §8.3).
    """

    kind: RegisterKind
    address: int
    data_type: DataType | None
    byte_order: ByteOrder = ByteOrder.BIG_ENDIAN
    byte: int | None = None          # U8/I8 `<reg>_<byte>`: 0 high-order, 1 low-order
    bit: int | None = None           # Bits `<reg>_<bit>[_<nbits>]`, bit 0 least significant
    nbits: int | None = None
    string_bytes: int | None = None  # String byte count

    @property
    def register_count(self) -> int:
        """Registers (or bits, for bit kinds) the point spans."""
        if self.kind.is_bit or self.data_type is None:
            return 1
        if self.data_type is DataType.STRING:
            assert self.string_bytes is not None
            return (self.string_bytes + 1) // 2
        return TYPE_REGISTERS[self.data_type]


class IoKind(IntEnum):
    ANALOG = 1
    DIGITAL = 2
    RELAY = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class IoPoint:
    """An `io` variable: `Info1` kind, `Info2` channel, `Info3` mode.

    mode: analog 1 = 4-20 mA, 2 = 0-10 V; digital 1 = ON/OFF, 2 = S0 pulses; relay: None.
    """

    kind: IoKind
    channel: int
    mode: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable:
    """One variable line of a definition file.

    `info1`..`info4` keep the text as written (after trimming) so files round-trip byte for byte;
    `modbus`, `io` and `tic_label` are the parsed meaning for the file's protocol.
    """

    line: int
    index: int
    info1: str
    info2: str
    info3: str
    info4: str
    name: str
    tag: str
    coef_a: Decimal
    coef_b: Decimal
    unit: str
    action: Action
    coef_a_text: str = "1"
    coef_b_text: str = "0"
    modbus: ModbusPoint | None = None
    io: IoPoint | None = None
    tic_label: str | None = None
    #: Index of the variable named by `Info4` (resolved per docs/formats.md §8.1 for repeated Names).
    scale_factor_index: int | None = None
    #: Name used as MQTT key and script handle: `Name`, or `<Name>_<Index>` for a repeated Name.
    key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionFile:
    file_name: str
    protocol: Protocol
    category: str
    manufacturer: str
    model: str
    variables: tuple[Variable, ...]
    sha256: str
    #: Fields after Model on line 1, kept so padded headers round-trip.
    header_extra: tuple[str, ...] = ()
    #: A column-title line (`Index;Info1;...`) as read, written back after line 1; empty: none.
    title_fields: tuple[str, ...] = ()

    def variable(self, index: int) -> Variable:
        for var in self.variables:
            if var.index == index:
                return var
        raise KeyError(index)

    @property
    def snapshot_id(self) -> str:
        """`<sha256>:<file name>`, the `def` value of records (docs/architecture.md §1)."""
        return f"{self.sha256}:{self.file_name}"


# --------------------------------------------------------------------------- daq.csv


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class DeviceKind(StrEnum):
    MODBUS_TCP = "modbusTCP"
    MODBUS_RTU = "modbusRTU"
    IO = "IO"
    TIC = "TIC1"


@dataclass(frozen=True, slots=True, kw_only=True)
class LanRow:
    line: int
    name: str                  # LAN1, LAN2
    ip: str | None
    mask: str | None
    gateway: str | None
    dns1: str | None
    dns2: str | None
    #: Columns written `0` rather than left empty (both mean "not set"), kept for the writer.
    zero_fields: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialPort:
    line: int | None           # None: no row, defaults
    port: str                  # SERIAL1..SERIAL3
    speed: int = 9600
    data_bits: int = 8
    parity: Parity = Parity.NONE
    stop_bits: int = 1
    wires: int = 2
    protocol: str = "modbusRTU"
    inter_frame_ms: int = 0
    forward_tcp_port: int | None = None
    path: str | None = None

    @property
    def number(self) -> int:
        return int(self.port[-1])

    @property
    def has_driver(self) -> bool:
        return self.protocol == "modbusRTU"


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """A device row of daq.csv."""

    line: int
    index: str                 # "1".."65535" as written canonically, "IO", "TIC1"
    interface: str             # "", "SERIAL2", "192.168.10.23", "192.168.10.23:502"
    name: str
    address: int | None
    acq_period_s: int = 600
    timeout_ms: int = 1000
    serial_number: str = ""
    parameters: str = ""
    category: str = ""
    model: str = ""
    def_file: str = ""

    @property
    def kind(self) -> DeviceKind:
        if self.index == "IO":
            return DeviceKind.IO
        if self.index == "TIC1":
            return DeviceKind.TIC
        if self.interface.upper().startswith("SERIAL"):
            return DeviceKind.MODBUS_RTU
        return DeviceKind.MODBUS_TCP

    @property
    def numeric_index(self) -> int | None:
        return int(self.index) if self.index.isdigit() else None

    @property
    def tcp_endpoint(self) -> tuple[str, int] | None:
        """(ip, port) for a Modbus TCP device, port 502 when not written; `[<ipv6>]:<port>`
        for the IPv6 address `sunpm modbus read` may be given (daq.csv takes IPv4 only)."""
        if self.kind is not DeviceKind.MODBUS_TCP:
            return None
        if self.interface.startswith("["):
            host, _, port = self.interface[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = self.interface.partition(":")
        # Checked digits, leading zeros allowed as many as the file holds (`int()` refuses
        # more than 4,300).
        return host, int(port.lstrip("0") or "0") if port else 502

    @property
    def serial_port(self) -> str | None:
        return self.interface.upper() if self.kind is DeviceKind.MODBUS_RTU else None

    @property
    def keep_alive(self) -> bool:
        return self.parameters.strip() != "0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Daq:
    lan: tuple[LanRow, ...] = ()
    tcp_inter_frame_ms: int = 0
    #: Serial ports SERIAL1..3, always three, rows absent from the file have line None.
    serial: tuple[SerialPort, ...] = field(default_factory=lambda: tuple(
        SerialPort(line=None, port=f"SERIAL{k}") for k in (1, 2, 3)))
    devices: tuple[Device, ...] = ()
    #: Which blocks the file had ("ethernet", "tcpInterFrameMs", "serial", "devices"), so the
    #: writer keeps absent blocks absent.
    blocks: frozenset[str] = frozenset()

    def device(self, index: str) -> Device:
        for dev in self.devices:
            if dev.index == index:
                return dev
        raise KeyError(index)

    def port(self, name: str) -> SerialPort:
        for port in self.serial:
            if port.port == name.upper():
                return port
        raise KeyError(name)


# --------------------------------------------------------------------------- var.ini, scl.ini


class ScheduleType(StrEnum):
    EVERYDAY = "everyday"
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"
    FIRST = "first"
    MIDDLE = "middle"
    LAST = "last"


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    line: int | None
    id: int
    type: ScheduleType = ScheduleType.EVERYDAY
    start_s: int = 0          # seconds after local midnight
    interval_min: int = 1440
    count: int = 1


# --------------------------------------------------------------------------- config.ini


class ServerType(StrEnum):
    NONE = "none"
    FTP = "ftp"
    FTPS = "ftps"
    SFTP = "sftp"
    WEBDAV = "webdav"
    MQTT = "mqtt"
    MQTTS = "mqtts"
    DIR = "dir"

    @property
    def is_file_server(self) -> bool:
        return self in (ServerType.FTP, ServerType.FTPS, ServerType.SFTP, ServerType.WEBDAV,
                        ServerType.DIR)

    @property
    def is_mqtt(self) -> bool:
        return self in (ServerType.MQTT, ServerType.MQTTS)


class FullPolicy(StrEnum):
    STOP = "stop"
    EVICT_OLDEST = "evict-oldest"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """One server slot (1 or 2) with the keys of its type resolved (docs/formats.md §4)."""

    slot: int
    type: ServerType = ServerType.NONE
    # file servers (FTP_ keys for ftp/ftps/sftp, HTTP_ for webdav, DIR_ for dir)
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""
    root_dir: str = "/"
    passive: bool = True
    two_step: bool = True               # *_TwoStepsSendingDisabled=1 (the manual's quirk)
    header_option: bool = True
    euro_date_format: bool = False
    host_key: str = ""
    accept_unknown_host_key: bool = False
    ca_file: str = ""
    http_url: str = ""
    dir_path: str = ""
    # MQTT
    mqtt_client_id: str = ""
    topic_data: str = ""
    topic_alarm: str = ""
    topic_command: str = ""
    topic_result: str = ""
    qos: int = 1
    keep_alive_s: int = 60
    cert_file: str = ""
    key_file: str = ""
    max_payload_kb: int = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """The gateway-wide keys of config.ini that other packages act on, typed and defaulted."""

    uid: str
    log_level: str = "info"
    time_zone: str = "UTC"
    servers: tuple[ServerSettings, ServerSettings] = (ServerSettings(slot=1),
                                                      ServerSettings(slot=2))
    store_path: str = ""
    store_device_quota_mb: int = 50
    store_full_policy: FullPolicy = FullPolicy.STOP
    store_flush_s: float = 1.0
    sd_mirror_path: str = ""
    daq_poll_period_s: int = 10
    daq_modbus_max_gap: int = 0
    tic_port: str = ""
    alarm_device_lost: bool = False
    web_bind: str = "127.0.0.1"
    web_port: int = 8080
    web_user: str = "admin"
    web_password_hash: str = ""
    #: Host names the web UI answers besides its own addresses, localhost and the box's name.
    web_hosts: tuple[str, ...] = ()
    #: Reverse proxies (addresses or networks) whose X-Forwarded-For names the web client.
    web_trusted_proxies: tuple[str, ...] = ()
    #: NTP_Server1, NTP_Server2 that are set, in that order; empty: no clock check.
    ntp_servers: tuple[str, ...] = ("pool.ntp.org",)
    modem_port: str = ""
    modem_apn: str = ""
    modem_user: str = ""
    modem_password: str = ""
    modem_pin: str = ""
    sms_allowed_numbers: tuple[str, ...] = ()
    sms_inbox_dir: str = ""
    system_update_command: str = ""


# --------------------------------------------------------------------------- record quality


class Quality(IntEnum):
    """Quality code of a reading or record value (docs/behaviour.md §2.2).

    Lives in the bottom room because drivers, the store and the views all speak it.
    """

    GOOD = 0
    TIMEOUT = 1
    EXCEPTION = 2
    BAD_FRAME = 3
    DECODE_ERROR = 4
    DISCONNECTED = 5
    NOT_IMPLEMENTED = 6
    GOOD_CLOCK_UNSYNCHRONISED = 7

    @property
    def is_good(self) -> bool:
        return self in (Quality.GOOD, Quality.GOOD_CLOCK_UNSYNCHRONISED)
