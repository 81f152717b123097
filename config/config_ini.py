"""`<uid>_config.ini` (docs/formats.md §4): the key table, its checks, reader and writer.

The writer keeps every line read in place (comments, unknown keys, aliases); only a key whose
value changed is rewritten as `KEY=VALUE`, and a key set away from its default that the file did
not hold is appended in table order. So parse-then-write of an LF file gives the same bytes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config._ini import IniLine, read_ini
from config._text import Findings, parse_bool, parse_decimal, parse_int
from config.decimal_text import read_integer
from config.errors import Problem, Severity
from config.key_hint import unknown_key_message
from config.model import FullPolicy, GatewaySettings, ServerSettings, ServerType

Check = Callable[[str], str]
"""Returns "" for a good value, else the problem (`'x' is outside 1..10`)."""

_UID: Final = re.compile(r"[A-Za-z0-9-]{1,32}")
_HOST: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")
_HOST_KEY: Final = re.compile(
    r"(?:(?:ssh|ecdsa|sk)-[A-Za-z0-9@._-]+ [A-Za-z0-9+/]+=*(?: .*)?)|(?:SHA256:[A-Za-z0-9+/]+=*)")
_URL: Final = re.compile(r"https?://[A-Za-z0-9._-]+(?::(?P<port>[0-9]{1,5}))?(?:/\S*)?")
_PHONE: Final = re.compile(r"\+[0-9]{6,15}")
_PIN: Final = re.compile(r"[0-9]{4,8}")
_PW_HASH: Final = re.compile(r"scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[0-9a-f]+\$[0-9a-f]+")


# ---------------------------------------------------------------------------- value checks


def _one_of(*values: str) -> Check:
    def check(text: str) -> str:
        return "" if text in values else f"'{text}' is not one of {', '.join(values)}"
    return check


def _int(lo: int, hi: int) -> Check:
    return lambda text: parse_int(text, lo, hi)[1]


#: How a bad port is said, wherever one is read (a key, a column, a URL, a command).
PORT_RANGE: Final = "an integer from 1 to 65535"


def port_problem(text: str) -> str:
    """"" for a TCP port's text, else the problem (`'22.5' is not an integer from 1 to 65535`):
    the same words for text that is no integer and for one out of range."""
    return "" if parse_int(text, 1, 65535)[0] is not None else f"'{text}' is not {PORT_RANGE}"


def _dec(lo: str, hi: str) -> Check:
    return lambda text: parse_decimal(text, Decimal(lo), Decimal(hi))[1]


def _bool(text: str) -> str:
    return parse_bool(text)[1]


def _text(text: str) -> str:
    return ""


def _host(text: str) -> str:
    if _HOST.fullmatch(text):
        return ""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return f"'{text}' is not a host name or IP address"
    return ""


def _ip(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return f"'{text}' is not an IP address"
    return ""


def _host_names(text: str) -> str:
    bad = [n for n in _comma_list(text) if _host(n)]
    return f"'{bad[0]}' is not a host name or IP address" if bad else ""


def _networks(text: str) -> str:
    for item in _comma_list(text):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"'{item}' is not an IP address or network (192.168.1.0/24)"
    return ""


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(n.strip(" \t") for n in text.split(",") if n.strip(" \t"))


def _abs_path(text: str) -> str:
    return "" if text.startswith("/") else f"'{text}' is not an absolute path"


def device_problem(text: str) -> str:
    """docs/formats.md §4: a serial port names a device under /dev/ (a server cannot point the
    gateway at any other file of its own)."""
    parts = text.split("/")
    if not text.startswith("/dev/") or any(p in ("", ".", "..") for p in parts[2:]):
        return f"'{text}' is not a device under /dev/"
    return ""


def _cert(text: str) -> str:
    return f"'{text}' is not a file name in /CERT" if ("/" in text or "\\" in text) else ""


def _uid(text: str) -> str:
    return "" if _UID.fullmatch(text) else f"'{text}' is not 1..32 of A-Z a-z 0-9 -"


def _client_id(text: str) -> str:
    ok = 1 <= len(text) <= 64 and all(0x21 <= ord(c) <= 0x7E for c in text)
    return "" if ok else f"'{text}' is not 1..64 printable ASCII characters"


def _topic(text: str) -> str:
    return f"'{text}' holds a wildcard ('+' or '#')" if ("+" in text or "#" in text) else ""


def _url(text: str) -> str:
    match = _URL.fullmatch(text)
    if match is None:
        return f"'{text}' is not https://host[:port][/path]"
    port = match["port"]
    return f"'{text}': port {port_problem(port)}" if port and port_problem(port) else ""


def _host_key(text: str) -> str:
    return "" if _HOST_KEY.fullmatch(text) else \
        f"'{text}' is not an OpenSSH key line or SHA256:<base64>"


def _pin(text: str) -> str:
    return "" if _PIN.fullmatch(text) else f"'{text}' is not 4..8 digits"


def _phones(text: str) -> str:
    bad = [n for n in text.split(",") if not _PHONE.fullmatch(n.strip(" \t"))]
    return f"'{bad[0]}' is not +<6..15 digits>" if bad else ""


def _pw_hash(text: str) -> str:
    # The whole form, not the prefix: a mangled hash would lock every login out, where the
    # default (empty) gives the one-time password of docs/web.md.
    return "" if _PW_HASH.fullmatch(text) else \
        f"'{text}' is not scrypt$<N>$<r>$<p>$<salt hex>$<key hex>"


def _time_zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"'{text}' is not a known IANA time zone"
    return ""


# ---------------------------------------------------------------------------- key table


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    check: Check
    #: Text default; None: no default (the key is required when its server type selects it).
    default: str | None
    #: Server types that need a key without default.
    required_for: frozenset[ServerType] = frozenset()


def _k(name: str, check: Check, default: str | None,
       required_for: tuple[ServerType, ...] = ()) -> KeySpec:
    return KeySpec(name, check, default, frozenset(required_for))


_SERVER_TYPES: Final = tuple(t.value for t in ServerType)
_FTP_TYPES: Final = (ServerType.FTP, ServerType.FTPS, ServerType.SFTP)

#: Keys of one server slot, server 1's spelling, in table order.
_SERVER_KEYS: Final[tuple[KeySpec, ...]] = (
    _k("SERVER_Type", _one_of(*_SERVER_TYPES), "none"),
    _k("FTP_Host", _host, None, _FTP_TYPES),
    _k("FTP_Port", port_problem, "21"),
    _k("FTP_User", _text, ""),
    _k("FTP_Password", _text, ""),
    _k("FTP_RootDir", _abs_path, "/"),
    _k("FTP_Passive", _bool, "1"),
    _k("FTP_TwoStepsSendingDisabled", _bool, "1"),
    _k("FTP_HeaderOption", _bool, "1"),
    _k("FTP_EuroDateFormat", _bool, "0"),
    _k("FTP_HostKey", _host_key, ""),
    _k("FTP_AcceptUnknownHostKey", _bool, "0"),
    _k("FTP_CaFile", _cert, ""),
    _k("HTTP_Url", _url, None, (ServerType.WEBDAV,)),
    _k("HTTP_User", _text, ""),
    _k("HTTP_Password", _text, ""),
    _k("HTTP_HeaderOption", _bool, "1"),
    _k("HTTP_EuroDateFormat", _bool, "0"),
    _k("HTTP_TwoStepsSendingDisabled", _bool, "1"),
    _k("HTTP_CaFile", _cert, ""),
    _k("MQTT_Host", _host, None, (ServerType.MQTT, ServerType.MQTTS)),
    _k("MQTT_Port", port_problem, "1883"),
    _k("MQTT_User", _text, ""),
    _k("MQTT_Password", _text, ""),
    _k("MQTT_ClientId", _client_id, ""),
    _k("MQTT_TopicData", _topic, ""),
    _k("MQTT_TopicAlarm", _topic, ""),
    _k("MQTT_TopicCommand", _topic, ""),
    _k("MQTT_TopicResult", _topic, ""),
    _k("MQTT_Qos", _int(0, 2), "1"),
    _k("MQTT_KeepAlive", _int(5, 3600), "60"),
    _k("MQTT_CaFile", _cert, ""),
    _k("MQTT_CertFile", _cert, ""),
    _k("MQTT_KeyFile", _cert, ""),
    _k("MQTT_MaxPayloadKB", _int(1, 10240), "256"),
    _k("DIR_Path", _abs_path, None, (ServerType.DIR,)),
    _k("DIR_HeaderOption", _bool, "1"),
    _k("DIR_EuroDateFormat", _bool, "0"),
)

_GATEWAY_HEAD: Final[tuple[KeySpec, ...]] = (
    _k("GATEWAY_Uid", _uid, ""),
    _k("LOG_Level", _one_of("debug", "info", "warning", "error"), "info"),
)

_GATEWAY_TAIL: Final[tuple[KeySpec, ...]] = (
    _k("NTP_Server1", _host, "pool.ntp.org"),
    _k("NTP_Server2", _host, ""),
    _k("NTP_TimeZone", _time_zone, "UTC"),
    _k("MODEM_Port", device_problem, ""),
    _k("MODEM_Apn", _text, ""),
    _k("MODEM_User", _text, ""),
    _k("MODEM_Password", _text, ""),
    _k("MODEM_Pin", _pin, ""),
    _k("SMS_AllowedNumbers", _phones, ""),
    _k("SMS_InboxDir", _abs_path, ""),
    _k("WEB_Bind", _ip, "127.0.0.1"),
    _k("WEB_Port", port_problem, "8080"),
    _k("WEB_User", _text, "admin"),
    _k("WEB_PasswordHash", _pw_hash, ""),
    _k("WEB_Hosts", _host_names, ""),
    _k("WEB_TrustedProxies", _networks, ""),
    _k("STORE_Path", _abs_path, ""),
    _k("STORE_DeviceQuotaMB", _int(1, 4096), "50"),
    _k("STORE_FullPolicy", _one_of("stop", "evict-oldest"), "stop"),
    _k("STORE_FlushSeconds", _dec("0.05", "60"), "1"),
    _k("SD_MirrorPath", _abs_path, ""),
    _k("DAQ_PollPeriod", _int(1, 3600), "10"),
    _k("DAQ_ModbusMaxGap", _int(0, 124), "0"),
    _k("TIC_Port", device_problem, ""),
    _k("ALARM_DeviceLost", _bool, "0"),
    _k("SYSTEM_UpdateCommand", _text, ""),
)

_PREFIX_2: Final = {"SERVER_": "SERVER2_", "FTP_": "FTP2_", "HTTP_": "HTTP2_",
                    "MQTT_": "MQTT2_", "DIR_": "DIR2_"}


def server_key(name: str, slot: int) -> str:
    """`FTP_Host` in slot 2 is `FTP2_Host`."""
    if slot == 1:
        return name
    prefix, _, rest = name.partition("_")
    return _PREFIX_2[prefix + "_"] + rest


#: The whole table in order; server 2's copies follow server 1's keys, in the same order.
KEY_TABLE: Final[tuple[KeySpec, ...]] = (
    *_GATEWAY_HEAD,
    *_SERVER_KEYS,
    *(KeySpec(server_key(k.name, 2), k.check, k.default, k.required_for) for k in _SERVER_KEYS),
    *_GATEWAY_TAIL,
)
KEYS: Final[Mapping[str, KeySpec]] = {k.name: k for k in KEY_TABLE}
_ORDER: Final[Mapping[str, int]] = {k.name: i for i, k in enumerate(KEY_TABLE)}
#: Keys whose empty value has a meaning of its own rather than "the default": written
#: `NTP_Server1=` turns the first clock-check server off (both empty = no clock check, §4).
_EMPTY_MEANS_EMPTY: Final = frozenset({"NTP_Server1"})
#: Serial devices: a bad value rejects the file rather than falling back (docs/formats.md §4).
_DEVICE_KEYS: Final = frozenset({"MODEM_Port", "TIC_Port"})
#: The manual prints `FTP2-HeaderOption`; read as `FTP2_HeaderOption` (docs/formats.md §1.3).
ALIASES: Final = {"FTP2-HeaderOption": "FTP2_HeaderOption"}


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigIni:
    """A config.ini as read: its lines (kept verbatim) and the value of every key present.

    `values` holds text values as written; `settings()` gives the typed view. To change a key,
    use `with_value`; the writer rewrites only that key's line.
    """

    uid: str = ""
    lines: tuple[IniLine, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Shared by every package: a read-only view, so nobody edits a parsed file in place.
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def with_value(self, key: str, value: str | None) -> ConfigIni:
        """A copy with `key` set (None: removed, its line dropped on write)."""
        values = dict(self.values)
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
        return ConfigIni(uid=self.uid, lines=self.lines, values=values)

    @property
    def unknown_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.values if k not in KEYS)

    def resolved(self) -> dict[str, str]:
        """Every key of the table with the value in force (bad or missing values: defaults)."""
        return _resolve(self, Findings(""), self.uid)

    def settings(self, uid: str | None = None) -> GatewaySettings:
        """The typed view; `uid` is the site's (file prefix), overridden by `GATEWAY_Uid`."""
        base_uid = uid if uid is not None else self.uid
        return _settings(_resolve(self, Findings(""), base_uid), base_uid)


#: docs/formats.md §4 (security): what the gateway executes, or where it reads and writes on its
#: own filesystem and listens. A configuration set from a server may not change them.
LOCAL_ONLY_KEYS: Final = ("SYSTEM_UpdateCommand", "STORE_Path", "SD_MirrorPath", "DIR_Path",
                          "DIR2_Path", "SMS_InboxDir", "WEB_Bind", "WEB_Port", "WEB_User",
                          "WEB_PasswordHash", "WEB_Hosts", "WEB_TrustedProxies")


def _local_value(key: str, text: str | None) -> object:
    """A local-only key's value as the gateway uses it: `08080` is port 8080 (§1.1's integers
    take leading zeros), `0:0:0:0:0:0:0:1` is `::1`; paths, names and commands are used as
    written."""
    if text is None:
        return None
    if key == "WEB_Port":
        return read_integer(text, max_digits=10)
    if key == "WEB_Bind":
        return ipaddress.ip_address(text)
    return text


def local_only_changes(local: bytes, candidate: bytes, file_name: str) -> list[Problem]:
    """The local-only keys whose value in force `candidate` (a config.ini from a server) would
    change against `local` (the running one; empty when absent), as errors on the candidate's
    lines: applying it would replace them, a key it leaves out included (docs/formats.md §4)."""
    here = parse(local, file_name)[0].resolved()
    there_cfg, found = parse(candidate, file_name)
    if found.rejected and not there_cfg.lines:
        # Unreadable (its encoding): it holds no value at all, and its own error says why; read
        # as all defaults it would also be said to change every local-only key set here.
        return []
    there = there_cfg.resolved()
    line_of = {ln.key: ln.line for ln in there_cfg.lines if ln.key is not None}
    return [Problem(file=file_name, line=line_of.get(key), field=key,
                    message="can only be changed locally; configuration rejected",
                    severity=Severity.ERROR)
            for key in LOCAL_ONLY_KEYS
            if _local_value(key, here.get(key)) != _local_value(key, there.get(key))]


def _uid_of(file_name: str) -> str:
    head, sep, _ = file_name.rpartition("_")
    return head if sep else ""


def parse(data: bytes, file_name: str) -> tuple[ConfigIni, Findings]:
    findings = Findings(file_name)
    lines = read_ini(data, findings, ALIASES)
    values = {ln.key: ln.value for ln in lines if ln.key is not None}
    cfg = ConfigIni(uid=_uid_of(file_name), lines=tuple(lines), values=values)
    for ln in lines:
        if ln.key is not None and ln.key not in KEYS:
            # Past the cap no hint is looked for: a server's 4 MiB file of unknown keys took
            # minutes of edit distances, for warnings only counted.
            findings.warn(ln.line, ln.key, "unknown key; ignored" if findings.full
                          else unknown_key_message(ln.key, KEYS))
    _resolve(cfg, findings, cfg.uid, line_of={ln.key: ln.line for ln in lines if ln.key})
    return cfg, findings


def _server_type(cfg: ConfigIni, slot: int, findings: Findings,
                 line_of: Mapping[str, int]) -> ServerType:
    key = server_key("SERVER_Type", slot)
    text = cfg.values.get(key, "")
    if text == "":
        return ServerType.NONE
    problem = KEYS[key].check(text)
    if problem:
        # Not the manual's fall back to the default: `none` would cut the gateway off from the
        # server that could correct it (a set pushed with `SFTP` for `sftp`), so the file is
        # rejected and the configuration in force keeps running.
        if text.lower() in _SERVER_TYPES:
            problem += f" (did you mean '{text.lower()}'?)"
        findings.error(line_of.get(key), key, problem)
        return ServerType.NONE
    return ServerType(text)


#: A `#` or `;` after a space: where a comment would start in files that allow one at a line end.
_COMMENT_AFTER: Final = re.compile(r"[ \t]+[#;]")


def _default_for(key: str, types: Mapping[int, ServerType], uid: str) -> str:
    spec = KEYS[key]
    slot = 2 if key.split("_")[0].endswith("2") else 1
    if key == server_key("FTP_Port", slot) and types[slot] is ServerType.SFTP:
        return "22"
    if key == server_key("MQTT_Port", slot) and types[slot] is ServerType.MQTTS:
        return "8883"
    if key == server_key("MQTT_ClientId", slot):
        return uid if slot == 1 else f"{uid}-2"
    return spec.default or ""


def _resolve(cfg: ConfigIni, findings: Findings, uid: str,
             line_of: Mapping[str, int] | None = None) -> dict[str, str]:
    """Check every key of the table; the value in force of each, problems into `findings`."""
    line_of = line_of or {}
    types = {slot: _server_type(cfg, slot, findings, line_of) for slot in (1, 2)}
    out: dict[str, str] = {}
    for spec in KEY_TABLE:
        key = spec.name
        if key in (server_key("SERVER_Type", 1), server_key("SERVER_Type", 2)):
            out[key] = types[1 if key == "SERVER_Type" else 2].value
            continue
        slot = 2 if key.split("_")[0].endswith("2") else 1
        text = cfg.values.get(key, "")
        default = _default_for(key, types, uid)
        needed = types[slot] in spec.required_for
        if text == "" and key in _EMPTY_MEANS_EMPTY and key in cfg.values:
            out[key] = ""
            continue
        if text == "":
            if needed:
                type_key = server_key("SERVER_Type", slot)
                findings.error(line_of.get(type_key), key,
                               f"missing (SERVER_Type={types[slot].value} needs it)"
                               if slot == 1 else
                               f"missing (SERVER2_Type={types[slot].value} needs it)")
            out[key] = default
            continue
        problem = _control_problem(text) or spec.check(text)
        if problem and _COMMENT_AFTER.search(text) and \
                not spec.check(_COMMENT_AFTER.split(text, 1)[0]):
            # `WEB_Port=8081 # admin`: the value is good but for a comment that .ini files only
            # take on a line of their own.
            problem += " (a comment must be on a line of its own)"
        if not problem:
            out[key] = text
        elif needed or key in _DEVICE_KEYS:
            findings.error(line_of.get(key), key, problem)
            out[key] = default
        elif spec.default is None:
            findings.warn(line_of.get(key), key, f"{problem}; not used")
            out[key] = default
        else:
            findings.default(line_of.get(key), key, problem, default)
            out[key] = default
    _pair_topics(out, findings, line_of)
    return out


def _control_problem(text: str) -> str:
    """A control character (but a tab) in a value: a NUL in a path, a user name or a command
    would only fail where it is used, far from the file (docs/formats.md §4)."""
    for ch in text:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or 0x7F <= code <= 0x9F:
            return f"control character 0x{code:02X}"
    return ""


def _pair_topics(out: dict[str, str], findings: Findings, line_of: Mapping[str, int]) -> None:
    """Command and result topics are both set or neither (docs/formats.md §4)."""
    for slot in (1, 2):
        cmd, res = server_key("MQTT_TopicCommand", slot), server_key("MQTT_TopicResult", slot)
        if bool(out[cmd]) == bool(out[res]):
            continue
        alone, other = (cmd, res) if out[cmd] else (res, cmd)
        findings.default(line_of.get(alone), alone, f"set without {other}", "")
        out[alone] = ""


def _whole(text: str) -> int:
    """A checked integer value: leading zeros allowed, as many as the file holds (§1.1), which
    `int()` refuses past 4,300 digits."""
    value = read_integer(text)
    assert value is not None, text      # the key's check passed, else its default is here
    return value


def _settings(v: Mapping[str, str], uid: str) -> GatewaySettings:
    servers = (_server(v, 1), _server(v, 2))
    return GatewaySettings(
        uid=v["GATEWAY_Uid"] or uid,
        log_level=v["LOG_Level"],
        time_zone=v["NTP_TimeZone"],
        servers=servers,
        store_path=v["STORE_Path"],
        store_device_quota_mb=_whole(v["STORE_DeviceQuotaMB"]),
        store_full_policy=FullPolicy(v["STORE_FullPolicy"]),
        store_flush_s=float(Decimal(v["STORE_FlushSeconds"])),
        sd_mirror_path=v["SD_MirrorPath"],
        daq_poll_period_s=_whole(v["DAQ_PollPeriod"]),
        daq_modbus_max_gap=_whole(v["DAQ_ModbusMaxGap"]),
        tic_port=v["TIC_Port"],
        alarm_device_lost=v["ALARM_DeviceLost"] == "1",
        web_bind=v["WEB_Bind"],
        web_port=_whole(v["WEB_Port"]),
        web_user=v["WEB_User"],
        web_password_hash=v["WEB_PasswordHash"],
        web_hosts=_comma_list(v["WEB_Hosts"]),
        web_trusted_proxies=_comma_list(v["WEB_TrustedProxies"]),
        ntp_servers=tuple(s for s in (v["NTP_Server1"], v["NTP_Server2"]) if s),
        modem_port=v["MODEM_Port"],
        modem_apn=v["MODEM_Apn"],
        modem_user=v["MODEM_User"],
        modem_password=v["MODEM_Password"],
        modem_pin=v["MODEM_Pin"],
        sms_allowed_numbers=_comma_list(v["SMS_AllowedNumbers"]),
        sms_inbox_dir=v["SMS_InboxDir"],
        system_update_command=v["SYSTEM_UpdateCommand"],
    )


def _server(v: Mapping[str, str], slot: int) -> ServerSettings:
    def g(name: str) -> str:
        return v[server_key(name, slot)]

    stype = ServerType(g("SERVER_Type"))
    family = {ServerType.WEBDAV: "HTTP", ServerType.DIR: "DIR", ServerType.MQTT: "MQTT",
              ServerType.MQTTS: "MQTT"}.get(stype, "FTP")
    host, port, user, password, ca_file = "", 0, "", "", ""
    if family == "FTP":
        host, port = g("FTP_Host"), _whole(g("FTP_Port"))
        user, password, ca_file = g("FTP_User"), g("FTP_Password"), g("FTP_CaFile")
    elif family == "MQTT":
        host, port = g("MQTT_Host"), _whole(g("MQTT_Port"))
        user, password, ca_file = g("MQTT_User"), g("MQTT_Password"), g("MQTT_CaFile")
    elif family == "HTTP":
        user, password, ca_file = g("HTTP_User"), g("HTTP_Password"), g("HTTP_CaFile")
    file_family = family if family in ("FTP", "HTTP", "DIR") else "FTP"
    two_step = True if family == "DIR" else g(f"{file_family}_TwoStepsSendingDisabled") == "1"
    return ServerSettings(
        slot=slot, type=stype, host=host, port=port, user=user, password=password,
        root_dir=g("FTP_RootDir"), passive=g("FTP_Passive") == "1", two_step=two_step,
        header_option=g(f"{file_family}_HeaderOption") == "1",
        euro_date_format=g(f"{file_family}_EuroDateFormat") == "1",
        host_key=g("FTP_HostKey"), accept_unknown_host_key=g("FTP_AcceptUnknownHostKey") == "1",
        ca_file=ca_file, http_url=g("HTTP_Url"), dir_path=g("DIR_Path"),
        mqtt_client_id=g("MQTT_ClientId"), topic_data=g("MQTT_TopicData"),
        topic_alarm=g("MQTT_TopicAlarm"), topic_command=g("MQTT_TopicCommand"),
        topic_result=g("MQTT_TopicResult"), qos=_whole(g("MQTT_Qos")),
        keep_alive_s=_whole(g("MQTT_KeepAlive")), cert_file=g("MQTT_CertFile"),
        key_file=g("MQTT_KeyFile"), max_payload_kb=_whole(g("MQTT_MaxPayloadKB")),
    )


# ---------------------------------------------------------------------------- writer


def render(cfg: ConfigIni) -> bytes:
    out: list[str] = []
    written: set[str] = set()
    for ln in cfg.lines:
        if ln.key is None:
            out.append(ln.text)
            continue
        if ln.key not in cfg.values:
            continue
        value = cfg.values[ln.key]
        out.append(ln.text if value == ln.value else f"{ln.key}={_one_line(value)}")
        written.add(ln.key)
    missing = [k for k in cfg.values if k not in written]
    missing.sort(key=lambda k: _ORDER.get(k, len(_ORDER)))
    for key in missing:
        spec = KEYS.get(key)
        if spec is not None and cfg.values[key] == (spec.default or ""):
            continue
        out.append(f"{key}={_one_line(cfg.values[key])}")
    return "".join(line + "\n" for line in out).encode("utf-8")


def _one_line(value: str) -> str:
    """A value set by a form, a command or an SMS never breaks its line: a line end in it would
    start a line of its own, a key the setter never had the right to set
    (`internet\nSYSTEM_UpdateCommand=...`)."""
    return value.replace("\r", " ").replace("\n", " ")


def new_config(values: Mapping[str, str], uid: str = "") -> ConfigIni:
    """A config.ini holding these keys and no lines yet (a new file: non-default keys in order)."""
    return ConfigIni(uid=uid, lines=(), values=dict(values))
