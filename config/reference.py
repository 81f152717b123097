"""What every configuration key and column means: the text of docs/configuration.md.

Values and defaults that the parsers hold as data (`config_ini.KEY_TABLE`, the daq.csv and
definition-file column tuples, the enums of `config.model`) are read from there; this module adds
the words a reader needs. `python -m config.docs` writes docs/configuration.md from both, and a
test fails when a key or column of the parsers has no line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """`values` accepted, `meaning` in one short sentence; `default` only where the parser's
    default depends on other keys or the host (the table's text default is used otherwise)."""

    values: str
    meaning: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class ColumnDoc:
    values: str
    default: str
    meaning: str


_BOOL: Final = "`0` `1`"
_PORT: Final = "1..65535"
_CERT: Final = "file name in `/CERT`"
_TEXT: Final = "text"
#: A daq.csv text column: its control characters are read as spaces (docs/formats.md §6).
_PLAIN_TEXT: Final = "text (a control character is read as a space)"

#: config.ini keys, server 1's spelling for the server keys (server 2's copies say "server 2").
CONFIG_KEYS: Final[Mapping[str, KeyDoc]] = {
    "GATEWAY_Uid": KeyDoc("1..32 of `A-Z a-z 0-9 -`",
                          "identifier in every file name and message; overrides the MAC-derived "
                          "one", "from the MAC address (`WPM` + last 6 hex digits)"),
    "LOG_Level": KeyDoc("`debug` `info` `warning` `error`", "lowest level written to the log"),
    "SERVER_Type": KeyDoc("`none` `ftp` `ftps` `sftp` `webdav` `mqtt` `mqtts` `dir`",
                          "protocol of the server (`ftps`: explicit TLS; `dir`: a local folder)"),
    "FTP_Host": KeyDoc("host name or IP address",
                       "FTP, FTPS or SFTP server; required when the type is one of them"),
    "FTP_Port": KeyDoc(_PORT, "TCP port of the FTP/FTPS/SFTP server", "21; 22 for `sftp`"),
    "FTP_User": KeyDoc(_TEXT, "login name"),
    "FTP_Password": KeyDoc(_TEXT, "login password (shown as `***`)"),
    "FTP_RootDir": KeyDoc("absolute path `/…`",
                          "root of the server tree (`/CONFIG`, `/DATA` … live under it)"),
    "FTP_Passive": KeyDoc(_BOOL, "1: FTP passive mode"),
    "FTP_TwoStepsSendingDisabled": KeyDoc(
        _BOOL, "1: upload as `<name>.tmp`, then rename (the name is the manual's, the meaning "
               "inverted)"),
    "FTP_HeaderOption": KeyDoc(_BOOL, "1: DATA files carry their column header lines"),
    "FTP_EuroDateFormat": KeyDoc(_BOOL, "1: dates in files as `DD/MM/YY`, 0: `YY/MM/DD`"),
    "FTP_HostKey": KeyDoc("OpenSSH key line or `SHA256:<base64>`",
                          "SFTP server key expected; empty refuses unknown keys unless "
                          "`FTP_AcceptUnknownHostKey=1`"),
    "FTP_AcceptUnknownHostKey": KeyDoc(_BOOL, "1: pin the first SFTP server key seen"),
    "FTP_CaFile": KeyDoc(_CERT, "CA certificate FTPS trusts; empty: the system CAs"),
    "HTTP_Url": KeyDoc("`https://host[:port][/path]` (`http://` accepted: credentials in clear)",
                       "WebDAV root of the server tree; required for `webdav`"),
    "HTTP_User": KeyDoc(_TEXT, "WebDAV login (Basic or Digest)"),
    "HTTP_Password": KeyDoc(_TEXT, "WebDAV password (shown as `***`)"),
    "HTTP_HeaderOption": KeyDoc(_BOOL, "as `FTP_HeaderOption`, for WebDAV"),
    "HTTP_EuroDateFormat": KeyDoc(_BOOL, "as `FTP_EuroDateFormat`, for WebDAV"),
    "HTTP_TwoStepsSendingDisabled": KeyDoc(_BOOL, "1: PUT `<name>.tmp`, then MOVE"),
    "HTTP_CaFile": KeyDoc(_CERT, "CA certificate WebDAV over HTTPS trusts; empty: system CAs"),
    "MQTT_Host": KeyDoc("host name or IP address", "MQTT broker; required for `mqtt`/`mqtts`"),
    "MQTT_Port": KeyDoc(_PORT, "TCP port of the broker", "1883; 8883 for `mqtts`"),
    "MQTT_User": KeyDoc(_TEXT, "broker login"),
    "MQTT_Password": KeyDoc(_TEXT, "broker password (shown as `***`)"),
    "MQTT_ClientId": KeyDoc("1..64 printable ASCII", "MQTT client identifier", "the uid"),
    "MQTT_TopicData": KeyDoc("topic without `+`/`#`",
                             "topic of data documents; empty: data not published"),
    "MQTT_TopicAlarm": KeyDoc("topic without `+`/`#`",
                              "topic of alarm documents; empty: alarms not published"),
    "MQTT_TopicCommand": KeyDoc("topic without `+`/`#`",
                                "topic commands arrive on; set with `MQTT_TopicResult` or not "
                                "at all"),
    "MQTT_TopicResult": KeyDoc("topic without `+`/`#`", "topic command results go to"),
    "MQTT_Qos": KeyDoc("`0` `1` `2`", "MQTT quality of service of what is published"),
    "MQTT_KeepAlive": KeyDoc("5..3600 (s)", "MQTT keep-alive interval"),
    "MQTT_CaFile": KeyDoc(_CERT, "CA certificate MQTTS trusts; empty: system CAs"),
    "MQTT_CertFile": KeyDoc(_CERT, "client certificate for MQTTS"),
    "MQTT_KeyFile": KeyDoc(_CERT, "private key of the client certificate"),
    "MQTT_MaxPayloadKB": KeyDoc("1..10240", "largest data document; bigger ones are split"),
    "DIR_Path": KeyDoc("absolute path", "local folder holding the server tree; required for "
                                        "`dir`"),
    "DIR_HeaderOption": KeyDoc(_BOOL, "as `FTP_HeaderOption`, for `dir`"),
    "DIR_EuroDateFormat": KeyDoc(_BOOL, "as `FTP_EuroDateFormat`, for `dir`"),
    "NTP_Server1": KeyDoc("host name or IP address",
                          "first clock-check server; written empty, it is off (both empty: no "
                          "clock check)"),
    "NTP_Server2": KeyDoc("host name or IP address", "second clock-check server"),
    "NTP_TimeZone": KeyDoc("IANA zone name (`Europe/Paris`)",
                           "local time of dates in files and schedules"),
    "MODEM_Port": KeyDoc("serial device path", "AT modem for SMS; empty: no modem"),
    "MODEM_Apn": KeyDoc(_TEXT, "mobile data access point name"),
    "MODEM_User": KeyDoc(_TEXT, "mobile data login"),
    "MODEM_Password": KeyDoc(_TEXT, "mobile data password (shown as `***`)"),
    "MODEM_Pin": KeyDoc("4..8 digits", "SIM PIN"),
    "SMS_AllowedNumbers": KeyDoc("comma list of `+<6..15 digits>`",
                                 "callers whose SMS commands are obeyed; empty: SMS commands off"),
    "SMS_InboxDir": KeyDoc("absolute path", "folder of received SMS files (one per message)"),
    "WEB_Bind": KeyDoc("IP address", "address the web UI listens on"),
    "WEB_Port": KeyDoc(_PORT, "port of the web UI"),
    "WEB_User": KeyDoc(_TEXT, "web UI login"),
    "WEB_PasswordHash": KeyDoc("`scrypt$…`",
                               "web UI password hash; empty: a one-time password is printed at "
                               "first start"),
    "WEB_Hosts": KeyDoc("comma list of host names or IP addresses",
                        "names the web UI answers to besides its listening address, `localhost`, "
                        "`127.0.0.1`, `[::1]` and the box's host name (a reverse proxy's public "
                        "name); a request for any other `Host` is refused (421)"),
    "WEB_TrustedProxies": KeyDoc("comma list of IP addresses or networks",
                                 "reverse proxies whose `X-Forwarded-For` names the web client "
                                 "(login throttling, loopback checks) and whose `X-Forwarded-Proto: "
                                 "https` marks cookies Secure; empty: the peer address, "
                                 "`X-Forwarded-For` ignored"),
    "STORE_Path": KeyDoc("absolute path", "folder of the event store",
                         "empty: `<data dir>/store`"),
    "STORE_DeviceQuotaMB": KeyDoc("1..4096", "flash space each device's records may take (MB)"),
    "STORE_FullPolicy": KeyDoc("`stop` `evict-oldest`",
                               "when a device's quota is full: stop recording it, or delete its "
                               "oldest delivered records"),
    "STORE_FlushSeconds": KeyDoc("0.05..60 (s)", "group-commit interval of the store"),
    "SD_MirrorPath": KeyDoc("absolute path", "microSD folder mirroring the store; empty: off"),
    "DAQ_PollPeriod": KeyDoc("1..3600 (s)", "interval between two polls of every device"),
    "DAQ_ModbusMaxGap": KeyDoc("0..124 (registers)",
                               "largest hole one Modbus read may span to merge requests"),
    "TIC_Port": KeyDoc("serial device path", "USB TIC (Linky) reader; empty: none"),
    "ALARM_DeviceLost": KeyDoc(_BOOL, "1: `Device lost` / `Device back` alarms"),
    "SYSTEM_UpdateCommand": KeyDoc("shell command",
                                   "installs a staged update package; empty: updates refused"),
}

#: var.ini: the `|` fields of `SCHEDULE_Params[<n>]` and `SCHEDULE2_Params[<n>]`.
VAR_FIELDS: Final[Mapping[str, ColumnDoc]] = {
    "Id": ColumnDoc("integer 0..999999, unique in its family", "none (required)",
                    "names the schedule"),
    "Type": ColumnDoc("`everyday`, `monday`…`sunday`, `first`, `middle`, `last`", "`everyday`",
                      "days it runs: every day, a weekday, the 1st, the 15th or the last day of "
                      "the month"),
    "StartTime": ColumnDoc("`HH:MM:SS` local", "`00:00:00`", "first connection of the day"),
    "Interval": ColumnDoc("1..1440 (minutes)", "`1440`", "time between two connections"),
    "Count": ColumnDoc("1..1440", "`1`", "connections per day (those past midnight dropped)"),
}

#: scl.ini: one key family.
SCL_KEYS: Final[Mapping[str, ColumnDoc]] = {
    "SCRIPT_File[<n>]": ColumnDoc("file name in `/SCRIPT` ending `.lua`", "none",
                                  "a Lua script started at boot; `<n>` from 0"),
}

DAQ_ETHERNET: Final[Mapping[str, ColumnDoc]] = {
    "type": ColumnDoc("`LAN1` `LAN2`", "none", "which network interface"),
    "ip": ColumnDoc("dotted IPv4, `0` or empty", "not set", "address (recorded, not applied)"),
    "mask": ColumnDoc("dotted IPv4, `0` or empty", "not set", "network mask"),
    "gateway": ColumnDoc("dotted IPv4, `0` or empty", "not set", "default gateway"),
    "dns1": ColumnDoc("dotted IPv4, `0` or empty", "not set", "first DNS server"),
    "dns2": ColumnDoc("dotted IPv4, `0` or empty", "not set", "second DNS server"),
}

DAQ_TCP_INTER_FRAME: Final[Mapping[str, ColumnDoc]] = {
    "tcpInterFrameMs": ColumnDoc("0..10000 (ms)", "0",
                                 "silence after a Modbus TCP answer before the next request on "
                                 "that connection"),
}

DAQ_SERIAL: Final[Mapping[str, ColumnDoc]] = {
    "port": ColumnDoc("`SERIAL1` `SERIAL2` `SERIAL3`", "none", "which serial port"),
    "speed": ColumnDoc("1200 … 115200", "9600", "baud rate"),
    "dataBits": ColumnDoc("7 8", "8", "data bits"),
    "parity": ColumnDoc("`N` `E` `O`", "`N`", "parity"),
    "stopBits": ColumnDoc("1 2", "1", "stop bits"),
    "wires": ColumnDoc("2 4", "2", "RS-485 with one pair or two pairs"),
    "protocol": ColumnDoc("`modbusRTU`; `smanet` `PW1` `delta` kept, not polled", "`modbusRTU`",
                          "protocol spoken on the bus"),
    "interFrame(ms)": ColumnDoc("0..10000", "0", "bus silence before each request"),
    "forwardTcpPort": ColumnDoc("empty or 1..65535, unique", "empty",
                                "Modbus TCP port relaying requests to this bus"),
    "path": ColumnDoc("OS serial device, unique", "empty",
                      "the device behind the port (`/dev/ttyUSB0`); empty: absent here"),
}

DAQ_DEVICES: Final[Mapping[str, ColumnDoc]] = {
    "index": ColumnDoc("0..65535, `IO`, `TIC1`; unique", "none",
                       "device number in DATA files, commands and logs"),
    "interface": ColumnDoc("`SERIAL1`..`3`, `<ipv4>` or `<ipv4>:<port>`; empty for `IO`/`TIC1`",
                           "none (Modbus)", "where the device is reached (TCP port 502 by "
                                            "default)"),
    "name": ColumnDoc("1..64 characters, unique", "the index",
                      "device name in MQTT documents and scripts"),
    "address": ColumnDoc("1..240 (0..240 on a proprietary port)", "none (Modbus)",
                         "Modbus unit id; ignored for `IO`/`TIC1`"),
    "acqPeriod(s)": ColumnDoc("1..86400", "600", "recording period (one DATA row per period)"),
    "timeout(ms)": ColumnDoc("50..60000", "1000", "answer timeout of one request"),
    "serialNumber": ColumnDoc(_PLAIN_TEXT, "empty", "serial number; for `TIC1` the meter address"),
    "parameters": ColumnDoc("TCP: `1`/`0` keep-alive; `TIC1`: `1200`, `9600` or empty; `IO`: "
                            "empty or `modbus:<index>`", "`1` for TCP, else empty",
                            "protocol options of the device"),
    "category": ColumnDoc(_PLAIN_TEXT, "empty", "device category (filled by discovery)"),
    "model": ColumnDoc(_PLAIN_TEXT, "empty", "device model (filled by discovery)"),
    "defFile": ColumnDoc("file name in `/DEF`", "none", "the device's definition file"),
}

DEFINITION_HEADER: Final[Mapping[str, ColumnDoc]] = {
    "Protocol": ColumnDoc("`modbusRTU` `modbusTCP` `io` `tic`", "none", "how the variables "
                                                                        "are read"),
    "Category": ColumnDoc(_TEXT, "empty", "shown in the web UI"),
    "Manufacturer": ColumnDoc(_TEXT, "empty", "shown in the web UI"),
    "Model": ColumnDoc(_TEXT, "empty", "shown in the web UI"),
}

DEFINITION_COLUMNS: Final[Mapping[str, ColumnDoc]] = {
    "Index": ColumnDoc("0..2147483647, unique", "none",
                       "variable number in DATA and ALARM files, logs and commands"),
    "Info1": ColumnDoc("per protocol (below)", "", "Modbus: register kind; `io`: input kind; "
                                                   "`tic`: group label"),
    "Info2": ColumnDoc("per protocol (below)", "", "Modbus: address (and byte, bit, size); "
                                                   "`io`: channel"),
    "Info3": ColumnDoc("per protocol (below)", "", "Modbus: data type and byte order; `io`: "
                                                   "mode"),
    "Info4": ColumnDoc("empty or a `Name` of this file", "empty",
                       "Modbus: the variable holding this one's SunSpec scale factor"),
    "Name": ColumnDoc("1..128 characters", "none", "variable name (MQTT key, web UI)"),
    "Tag": ColumnDoc("empty or 1..64 characters, unique", "empty",
                     "handle for scripts and commands"),
    "CoefA": ColumnDoc("decimal", "1", "scale: value = CoefA × raw + CoefB"),
    "CoefB": ColumnDoc("decimal", "0", "offset of the scaled value"),
    "Unit": ColumnDoc(_TEXT, "empty", "unit, for display"),
    "Action": ColumnDoc("`0` `1` `2` `4` `8` `9`", "none", "what is done with the variable "
                                                           "(below)"),
}

#: `Action` values, by `config.model.Action` member name.
ACTIONS: Final[Mapping[str, str]] = {
    "NOT_READ": "not read",
    "PARAMETER": "parameter: read at start-up, when the device comes back and on "
                 "`getParameters`; written to `_P_` files only",
    "MIN_MAX_MEAN": "min, max and mean of the good polls of the period (`min;max;mean` in DATA)",
    "INSTANT": "last good value of the period",
    "ALARM_ON_CHANGE": "last good value, and an alarm at every change",
    "ALARM_AND_PARAMETER": "`8` and `1` together",
}
