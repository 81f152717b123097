"""config.ini (docs/formats.md §4): key table, defaults, rejection and the line-keeping writer."""

from __future__ import annotations

import pytest

import config
from config import ConfigError
from config.model import FullPolicy, ServerType

F = "WPM00BDE4_config.ini"


def _parse(text: str) -> config.Parsed[config.ConfigIni]:
    return config.parse_config_ini(text.encode(), F)


def _rejected(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        _parse(text)
    return [str(p) for p in exc.value.errors]


def test_empty_file_gives_every_default() -> None:
    s = _parse("").value.settings("WPM00BDE4")
    assert (s.uid, s.log_level, s.time_zone, s.web_bind, s.web_port, s.web_user) == (
        "WPM00BDE4", "info", "UTC", "127.0.0.1", 8080, "admin")
    assert s.ntp_servers == ("pool.ntp.org",) and s.store_full_policy is FullPolicy.STOP
    assert (s.store_device_quota_mb, s.store_flush_s, s.daq_poll_period_s) == (50, 1.0, 10)
    assert [srv.type for srv in s.servers] == [ServerType.NONE, ServerType.NONE]
    assert s.servers[0].mqtt_client_id == "WPM00BDE4"
    assert s.servers[1].mqtt_client_id == "WPM00BDE4-2"


@pytest.mark.parametrize("line,message", [
    ("LOG_Level=verbose", ("LOG_Level: 'verbose' is not one of debug, info, warning, error; "
                          "default info used")),
    ("WEB_Port=70000", "WEB_Port: '70000' is not an integer from 1 to 65535; default 8080 used"),
    # A port is said the same way whatever is wrong with it, and by its key.
    ("FTP_Port=22.5", "FTP_Port: '22.5' is not an integer from 1 to 65535; default 21 used"),
    ("MQTT2_Port=1_883", ("MQTT2_Port: '1_883' is not an integer from 1 to 65535; default 1883 "
                          "used")),
    ("WEB_Port=\uff18\uff10\uff18\uff11", ("WEB_Port: '\uff18\uff10\uff18\uff11' is not an "
                                            "integer from 1 to 65535; default 8080 used")),
    ("STORE_FlushSeconds=0,5", ("STORE_FlushSeconds: '0,5' is not a number (use '.' as decimal "
                               "point); default 1 used")),
    ("MQTT_Qos=3", "MQTT_Qos: '3' is outside 0..2; default 1 used"),
    ("FTP_Passive=yes", "FTP_Passive: 'yes' is not 0 or 1; default 1 used"),
    ("NTP_TimeZone=Mars/Olympus", ("NTP_TimeZone: 'Mars/Olympus' is not a known IANA time zone; "
                                  "default UTC used")),
    ("MQTT_TopicData=plant/#", ("MQTT_TopicData: 'plant/#' holds a wildcard ('+' or '#'); "
                               "default (empty) used")),
    ("MQTT_TopicCommand=plant/cmd", ("MQTT_TopicCommand: set without MQTT_TopicResult; "
                                    "default (empty) used")),
    ("FTP_Host=bad host", "FTP_Host: 'bad host' is not a host name or IP address; not used"),
    # A secret's value is never shown, not even the bad one (the line reaches uploaded logs).
    ("WEB_PasswordHash=scrypt$16384$8$1$abc", ("WEB_PasswordHash: '***' is not "
                                             "scrypt$<N>$<r>$<p>$<salt hex>$<key hex>; default "
                                             "(empty) used")),
    ("MODEM_Pin=12", "MODEM_Pin: '***' is not 4..8 digits; default (empty) used"),
    ("HTTP_Url=https://dav.example.com:99999/x", ("HTTP_Url: 'https://dav.example.com:99999/x': "
                                                "port '99999' is not an integer from 1 to "
                                                "65535; not used")),
    ("HTTP_Url=https://dav.example.com:0/x", ("HTTP_Url: 'https://dav.example.com:0/x': port '0' "
                                            "is not an integer from 1 to 65535; not used")),
    ("WEB_Hosts=gw.example, bad host", ("WEB_Hosts: 'bad host' is not a host name or IP "
                                        "address; default (empty) used")),
    ("WEB_TrustedProxies=10.0.0.0/8,proxy", ("WEB_TrustedProxies: 'proxy' is not an IP address "
                                            "or network (192.168.1.0/24); default (empty) used")),
    ("HTTP_Url=https://bob:s3cret@dav.example.com/x",
     "HTTP_Url: 'https://bob:***@dav.example.com/x' is not https://host[:port][/path]; not used"),
])
def test_bad_value_falls_back_to_default_with_one_warning(line: str, message: str) -> None:
    parsed = _parse(f"# c\n{line}\n")
    assert [str(w) for w in parsed.warnings] == [f"{F}:2: {message}"]


def test_web_hosts_and_trusted_proxies_are_comma_lists() -> None:
    settings = _parse("WEB_Hosts= gw.plant.example ,192.0.2.7,\n"
                      "WEB_TrustedProxies=127.0.0.1, 10.1.0.0/16,::1\n").value.settings("U")
    assert settings.web_hosts == ("gw.plant.example", "192.0.2.7")
    assert settings.web_trusted_proxies == ("127.0.0.1", "10.1.0.0/16", "::1")


def test_sftp_port_default_is_22_and_mqtts_8883() -> None:
    s = _parse("SERVER_Type=sftp\nFTP_Host=h\nSERVER2_Type=mqtts\nMQTT2_Host=b\n").value
    settings = s.settings("u")
    assert settings.servers[0].port == 22 and settings.servers[1].port == 8883
    warned = _parse("SERVER_Type=sftp\nFTP_Host=h\nFTP_Port=0\n").warnings
    assert [str(w) for w in warned] == [(f"{F}:3: FTP_Port: '0' is not an integer from 1 to "
                                         "65535; default 22 used")]


def test_key_without_default_rejects_when_the_type_needs_it() -> None:
    assert _rejected("SERVER_Type=sftp\n") == [
        f"{F}:1: FTP_Host: missing (SERVER_Type=sftp needs it); file rejected"]
    assert _rejected("SERVER2_Type=webdav\nHTTP2_Url=ftp://x\n") == [
        f"{F}:2: HTTP2_Url: 'ftp://x' is not https://host[:port][/path]; file rejected"]
    assert _rejected("SERVER_Type=dir\nDIR_Path=relative/dir\n") == [
        f"{F}:2: DIR_Path: 'relative/dir' is not an absolute path; file rejected"]


def test_a_bad_server_type_rejects_rather_than_cutting_the_gateway_off() -> None:
    # Falling back to `none` would leave no server to send a corrected file through.
    assert _rejected("SERVER_Type=SFTP\nFTP_Host=h\n") == [
        f"{F}:1: SERVER_Type: 'SFTP' is not one of none, ftp, ftps, sftp, webdav, mqtt, mqtts, "
        "dir (did you mean 'sftp'?); file rejected"]
    assert _rejected("SERVER2_Type=ftpes\n") == [
        f"{F}:1: SERVER2_Type: 'ftpes' is not one of none, ftp, ftps, sftp, webdav, mqtt, mqtts, "
        "dir; file rejected"]


def test_repeated_key_and_line_without_equals_reject_and_all_are_reported() -> None:
    assert _rejected("LOG_Level=info\njust text\nLOG_Level=debug\n") == [
        f"{F}:2: line: no '='; file rejected",
        f"{F}:3: LOG_Level: repeated (first at line 1); file rejected",
    ]


def test_alias_and_canonical_spelling_count_as_one_key() -> None:
    assert _rejected("FTP2-HeaderOption=0\nFTP2_HeaderOption=1\n") == [
        f"{F}:2: FTP2_HeaderOption: repeated (first at line 1); file rejected"]


def test_writer_keeps_every_line_and_rewrites_only_a_changed_key() -> None:
    text = "# head\n  WEB_Port = 8081 \nVENDOR_X=1\n\n; tail\nFTP2-HeaderOption=0\n"
    cfg = _parse(text).value
    assert config.render_config_ini(cfg) == text.encode()
    changed = cfg.with_value("WEB_Port", "9000").with_value("LOG_Level", "debug")
    assert config.render_config_ini(changed).decode() == (
        "# head\nWEB_Port=9000\nVENDOR_X=1\n\n; tail\nFTP2-HeaderOption=0\nLOG_Level=debug\n")
    assert config.render_config_ini(cfg.with_value("VENDOR_X", None)).decode() == (
        "# head\n  WEB_Port = 8081 \n\n; tail\nFTP2-HeaderOption=0\n")


def test_appended_keys_follow_table_order_and_defaults_are_not_appended() -> None:
    cfg = config.new_config({"WEB_Port": "8081", "LOG_Level": "info", "SERVER_Type": "dir",
                             "DIR_Path": "/srv/is", "NTP_TimeZone": "Europe/Paris"})
    assert config.render_config_ini(cfg).decode() == (
        "SERVER_Type=dir\nDIR_Path=/srv/is\nNTP_TimeZone=Europe/Paris\nWEB_Port=8081\n")


def test_gateway_uid_overrides_the_site_uid() -> None:
    assert _parse("GATEWAY_Uid=PLANT-7\n").value.settings("WPM00BDE4").uid == "PLANT-7"
    warned = _parse("GATEWAY_Uid=bad_uid\n")
    assert warned.value.settings("WPM00BDE4").uid == "WPM00BDE4"
    assert len(warned.warnings) == 1


def test_every_table_key_has_a_server2_copy() -> None:
    names = {k.name for k in config.KEY_TABLE}
    for name in ("SERVER2_Type", "FTP2_Host", "HTTP2_Url", "MQTT2_TopicData", "DIR2_Path",
                 "FTP2_TwoStepsSendingDisabled", "FTP2_EuroDateFormat", "HTTP2_EuroDateFormat"):
        assert name in names


def test_ntp_server1_written_empty_turns_the_clock_check_off() -> None:
    assert _parse("").value.settings("u").ntp_servers == ("pool.ntp.org",)
    assert _parse("NTP_Server1=\n").value.settings("u").ntp_servers == ()
    assert _parse("NTP_Server1=\nNTP_Server2=time.example\n").value.settings(
        "u").ntp_servers == ("time.example",)
    off = config.new_config({"NTP_Server1": ""})
    assert config.render_config_ini(off) == b"NTP_Server1=\n"


def test_integers_with_thousands_of_leading_zeros_are_their_value() -> None:
    # docs/formats.md §1.1 allows leading zeros, as many as a file holds; Python's `int()`
    # refuses a text of over 4,300 digits, and `sunpm config validate` showed a traceback.
    zeros = "0" * 5000
    ini = "".join(f"{k}={zeros}{v}\n" for k, v in (
        ("STORE_DeviceQuotaMB", 60), ("DAQ_PollPeriod", 5), ("DAQ_ModbusMaxGap", 7),
        ("WEB_Port", 8081), ("SERVER_Type", ""), ("MQTT_Port", 1884), ("MQTT_Qos", 1),
        ("MQTT_KeepAlive", 30), ("MQTT_MaxPayloadKB", 64), ("SERVER2_Type", ""),
        ("FTP2_Port", 2121)))
    ini = ini.replace(f"SERVER_Type={zeros}", "SERVER_Type=mqtt\nMQTT_Host=broker") \
        .replace(f"SERVER2_Type={zeros}", "SERVER2_Type=ftp\nFTP2_Host=files")
    parsed = _parse(ini)
    assert parsed.warnings == ()
    s = parsed.value.settings("WPM00BDE4")
    assert (s.store_device_quota_mb, s.daq_poll_period_s, s.daq_modbus_max_gap, s.web_port) == \
        (60, 5, 7, 8081)
    mqtt, ftp = s.servers
    assert (mqtt.port, mqtt.qos, mqtt.keep_alive_s, mqtt.max_payload_kb) == (1884, 1, 30, 64)
    assert ftp.port == 2121


def test_a_comment_after_a_good_value_is_named_as_such() -> None:
    """`WEB_Port=8081 # admin`: the integrator sees why 8081 is not taken; a bad value with a
    comment after it is said as before, and a text value keeps its `#`."""
    parsed = config.parse_config_ini(
        b"WEB_Port=8081 # admin port\nLOG_Level=debug\t; verbose\nMQTT_Qos=7 # best\n"
        b"FTP_Password=a #b\n", "u_config.ini")
    assert [str(p) for p in parsed.warnings] == [
        "u_config.ini:1: WEB_Port: '8081 # admin port' is not an integer from 1 to 65535 (a "
        "comment must be on a line of its own); default 8080 used",
        "u_config.ini:2: LOG_Level: 'debug\\x09; verbose' is not one of debug, info, warning, "
        "error (a comment must be on a line of its own); default info used",
        "u_config.ini:3: MQTT_Qos: '7 # best' is not an integer; default 1 used"]
    assert parsed.value.settings("u").servers[0].password == "a #b"
