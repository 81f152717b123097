"""The Configuration page and its API on a running gateway: sections saved alone through
`config`, field errors beside the field, nothing written when refused, secrets never sent, the
next connection times from the scheduler's own computation."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import USERS, make_certs, run_peer
from waiting import wait_until_sync
from web_support import UID, RunningGateway

import pipeline.web.common
import pipeline.web.facade
from config import Site, load_site
from config.errors import Problem, Severity
from pipeline.web.auth import hash_password, verify_password
from pipeline.web.config_forms import var_ini_edit

#: The gateway reloads and polls on its own time: asked every 0.2 s, up to 20 s.
_eventually = functools.partial(wait_until_sync, within_s=20.0, every=0.2)


def _config_files(gateway: RunningGateway) -> dict[str, bytes]:
    folder = gateway.config_dir / "CONFIG"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_planted_schedule_mistake_is_a_field_error_and_nothing_is_saved(
        web_gateway: RunningGateway) -> None:
    before = _config_files(web_gateway)
    with web_gateway.client() as client:
        rows = {"s1_0_Id": "1", "s1_0_Type": "everyday", "s1_0_StartTime": "00:00:00",
                "s1_0_Interval": "60", "s1_0_Count": "24",
                "s1_1_Id": "2", "s1_1_Type": "monday", "s1_1_StartTime": "25:61:00",
                "s1_1_Interval": "1440", "s1_1_Count": "1"}
        answer = client.put("/api/config/schedules", json=rows)
        assert answer.status_code == 422
        body = answer.json()
        assert body["fields"] == {"s1_1_StartTime": [
            "'25:61:00' is not HH:MM:SS in 00:00:00..23:59:59"]}
        # The problems keep config's one-line form, with what a file load would do.
        assert body["problems"][0]["message"].endswith("; default 00:00:00 used")
        # The page shows it beside the field, with what was typed kept.
        page = client.post("/configuration/schedules",
                           data={**rows, "csrf": client.headers["X-CSRF-Token"]})
        assert page.status_code == 422
        html = page.text
        field = html.index('name="s1_1_StartTime"')
        assert 'value="25:61:00"' in html[field:field + 200]
        error = html.index('id="err-s1_1_StartTime"')
        assert error > field and "is not HH:MM:SS" in html[error:error + 200]
        assert 'aria-invalid="true"' in html[field:error]
    assert _config_files(web_gateway) == before


def test_a_schedule_saved_unchanged_keeps_the_file_s_bytes() -> None:
    """The form wrote the file's comments and blank lines first, the schedules after them: a
    comment above server 2's entries or a trailing blank line moved at every save. They stay
    where they are, as config's writer keeps them, and a problem still finds its row."""
    current = (b"# plant schedules\nSCHEDULE_Params[0]=1|everyday|00:00:00|60|24\n"
               b"# server 2\nSCHEDULE2_Params[0]=7|monday|01:00:00|1440|1\n\n")
    form = {"s1_0_Id": "1", "s1_0_Type": "everyday", "s1_0_StartTime": "00:00:00",
            "s1_0_Interval": "60", "s1_0_Count": "24",
            "s2_0_Id": "7", "s2_0_Type": "monday", "s2_0_StartTime": "01:00:00",
            "s2_0_Interval": "1440", "s2_0_Count": "1"}
    path = f"CONFIG/{UID}_var.ini"
    assert var_ini_edit(path, current, form).files[path] == current
    more = {**form, "s1_1_Id": "2", "s1_1_StartTime": "25:00:00"}
    edit = var_ini_edit(path, current, more)
    assert edit.files[path] == (
        b"# plant schedules\nSCHEDULE_Params[0]=1|everyday|00:00:00|60|24\n"
        b"SCHEDULE_Params[1]=2||25:00:00||\n"
        b"# server 2\nSCHEDULE2_Params[0]=7|monday|01:00:00|1440|1\n\n")
    problem = Problem(file=f"{UID}_var.ini", line=3, field="StartTime", message="",
                      severity=Severity.WARNING)
    assert edit.locate(problem) == "s1_1_StartTime"
    assert edit.locate(dataclasses.replace(problem, line=5, field="Id")) == "s2_0_Id"


def test_schedule_rows_are_ascii_digits_in_numeric_order() -> None:
    # `"²".isdigit()` holds and `int("²")` raised (a 500 for a crafted form), as did `int()`
    # of a row of over 4,300 digits; a row is read by the text sent (`01` was looked up as `1`
    # and lost its fields).
    row = {"Id": "3", "Type": "monday", "StartTime": "01:00:00", "Interval": "1440", "Count": "1"}
    long_row = "0" * 5000 + "12"
    form = {**{f"s1_2_{k}": v for k, v in row.items()},
            **{f"s1_\u00b2_{k}": v for k, v in row.items()},
            **{f"s1_{long_row}_{k}": v.replace("3", "4") for k, v in row.items()},
            **{f"s1_01_{k}": v.replace("3", "5") for k, v in row.items()}}
    path = f"CONFIG/{UID}_var.ini"
    edit = var_ini_edit(path, b"", form)
    assert edit.files[path] == (b"SCHEDULE_Params[0]=5|monday|01:00:00|1440|1\n"
                                b"SCHEDULE_Params[1]=3|monday|01:00:00|1440|1\n"
                                b"SCHEDULE_Params[2]=4|monday|01:00:00|1440|1\n")
    problem = Problem(file=f"{UID}_var.ini", line=1, field="Count", message="",
                      severity=Severity.WARNING)
    assert edit.locate(problem) == "s1_01_Count"


def test_schedules_saved_and_previewed_by_the_scheduler(fresh_gateway: RunningGateway) -> None:
    with fresh_gateway.client() as client:
        rows = {"s1_0_Id": "1", "s1_0_Type": "everyday", "s1_0_StartTime": "00:30:00",
                "s1_0_Interval": "120", "s1_0_Count": "12"}
        preview = client.post("/api/schedule/next", json=rows)
        assert preview.status_code == 200, preview.text
        times = preview.json()["servers"]["1"]
        assert len(times) == 10
        assert all(t[11:19].endswith(":30:00") and int(t[11:13]) % 2 == 0 for t in times), times
        assert client.put("/api/config/schedules", json=rows).status_code == 200
        var_ini = fresh_gateway.config_dir / "CONFIG" / f"{UID}_var.ini"
        assert var_ini.read_text() == "SCHEDULE_Params[0]=1|everyday|00:30:00|120|12\n"
        # The saved schedules' times at once; the scheduler takes them at the reload.
        assert client.get("/api/schedule/next").json()["servers"]["1"] == times
        gateway = fresh_gateway.gateway
        assert gateway is not None
        _eventually(lambda: gateway.site is not None and
                    gateway.site.var_ini.schedules(1)[0].interval_min == 120)


def test_server_section_field_errors_and_save(fresh_gateway: RunningGateway) -> None:
    with fresh_gateway.client() as client:
        answer = client.put("/api/config/server2", json={"SERVER2_Type": "ftp",
                                                         "FTP2_Port": "99999"})
        assert answer.status_code == 422
        fields = answer.json()["fields"]
        assert set(fields) == {"FTP2_Host", "FTP2_Port"}, fields
        assert "missing" in fields["FTP2_Host"][0]
        answer = client.put("/api/config/server2", json={
            "SERVER2_Type": "ftp", "FTP2_Host": "127.0.0.1", "FTP2_Port": "2121",
            "FTP2_Password": "s3cret-pass"})
        assert answer.status_code == 200, answer.text
        _eventually(lambda: fresh_gateway.gateway is not None and
                    fresh_gateway.gateway.site is not None and
               fresh_gateway.gateway.site.settings.servers[1].port == 2121)
        # The password is stored, never sent back, and kept when the field comes back empty.
        config = client.get("/api/config").json()
        keys = {k["key"]: k for s in config["sections"] for k in s["keys"]}
        assert keys["FTP2_Password"]["value"] == "" and keys["FTP2_Password"]["set"]
        assert "s3cret-pass" not in client.get("/configuration").text
        assert client.put("/api/config/server2", json={"FTP2_Password": "",
                                                       "FTP2_Port": "2122"}).status_code == 200
        site = load_site(fresh_gateway.config_dir)
        assert site.settings.servers[1].password == "s3cret-pass"
        assert site.settings.servers[1].port == 2122
        assert client.put("/api/config/nosuch", json={}).status_code == 404


def test_serial_and_network_sections(fresh_gateway: RunningGateway) -> None:
    with fresh_gateway.client() as client:
        answer = client.put("/api/config/serial", json={"SERIAL2_speed": "12345"})
        assert answer.status_code == 422
        assert set(answer.json()["fields"]) == {"SERIAL2_speed"}, answer.json()
        answer = client.put("/api/config/network", json={"LAN1_ip": "10.0.0.300"})
        assert answer.status_code == 422
        assert set(answer.json()["fields"]) == {"LAN1_ip"}, answer.json()
        answer = client.put("/api/config/network", json={"LAN1_ip": "192.168.1.20",
                                                          "LAN1_mask": "255.255.255.0"})
        assert answer.status_code == 200, answer.text
        answer = client.put("/api/config/serial", json={"SERIAL2_speed": "19200"})
        assert answer.status_code == 200, answer.text
        site = load_site(fresh_gateway.config_dir)
        assert site.daq.lan[0].ip == "192.168.1.20"
        assert {p.port: p.speed for p in site.daq.serial}["SERIAL2"] == 19200
        assert [d.index for d in site.daq.devices] == ["1", "2"]


def test_password_change(fresh_gateway: RunningGateway) -> None:
    current = fresh_gateway.password
    with fresh_gateway.client() as client:
        answer = client.post("/api/config/password", json={
            "currentPassword": current, "newPassword": "short", "confirmPassword": "short"})
        assert answer.status_code == 422 and set(answer.json()["fields"]) == {"newPassword"}
        answer = client.post("/api/config/password", json={
            "currentPassword": current, "newPassword": "a-long-password",
            "confirmPassword": "other"})
        assert answer.status_code == 422
        assert set(answer.json()["fields"]) == {"confirmPassword"}
        answer = client.post("/api/config/password", json={
            "currentPassword": current, "newPassword": "a-long-password",
            "confirmPassword": "a-long-password"})
        assert answer.status_code == 200, answer.text
        assert client.get("/api/devices").status_code == 200   # this session goes on
    assert not (fresh_gateway.data_dir / "initial-password").exists()
    stored = load_site(fresh_gateway.config_dir).settings.web_password_hash
    assert verify_password("a-long-password", stored)
    fresh_gateway.password = "a-long-password"
    with fresh_gateway.client() as client:
        assert client.get("/api/devices").status_code == 200
    with fresh_gateway.client(login=False) as client:
        answer = client.post("/api/login", json={"user": "admin", "password": "a-long-password0"})
        assert answer.status_code == 401


def test_a_password_change_needs_the_current_password(fresh_gateway: RunningGateway) -> None:
    """A browser left logged in (a session lasts 12 h idle) must not let whoever sits at it
    take the gateway: the new password ended every other session, the owner's too."""
    with fresh_gateway.client() as client:
        for sent in ({}, {"currentPassword": "not-the-password"}):
            answer = client.post("/api/config/password", json={
                **sent, "newPassword": "a-long-password", "confirmPassword": "a-long-password"})
            assert answer.status_code == 422, answer.text
            assert set(answer.json()["fields"]) == {"currentPassword"}
        # Guessing it is throttled as logins are.
        codes = [client.post("/api/config/password", json={
            "currentPassword": f"guess{k}", "newPassword": "a-long-password",
            "confirmPassword": "a-long-password"}).status_code for k in range(5)]
        assert codes == [422, 422, 422, 422, 429]
        form = client.get("/configuration").text
        assert 'name="currentPassword"' in form
    stored = load_site(fresh_gateway.config_dir).settings.web_password_hash
    assert not stored or not verify_password("a-long-password", stored)
    assert (fresh_gateway.data_dir / "initial-password").exists()


def test_validate_a_candidate_without_writing(web_gateway: RunningGateway) -> None:
    before = _config_files(web_gateway)
    with web_gateway.client() as client:
        name = f"CONFIG/{UID}_var.ini"
        answer = client.post("/api/config/validate", json={"files": {
            name: "SCHEDULE_Params[0]=1|everyday|99:00:00|60|24\n"}})
        assert answer.status_code == 200
        body = answer.json()
        assert body["ok"] is True   # a warning: the file would load, with a default
        assert [(p["file"], p["line"], p["field"]) for p in body["problems"]] == \
            [(f"{UID}_var.ini", 1, "StartTime")]
        answer = client.post("/api/config/validate", json={"files": {
            name: "SCHEDULE_Params[0]=x\n"}})
        assert answer.json()["ok"] is False
        for bad in ({"files": {"../x": "1"}}, {"files": {"CONFIG/a/b": "1"}}, {"files": []},
                    {"other": 1}):
            assert client.post("/api/config/validate", json=bad).status_code == 400
    assert _config_files(web_gateway) == before


def test_validate_hides_a_secret_in_its_problems(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        answer = client.post("/api/config/validate", json={"files": {
            f"CONFIG/{UID}_config.ini": "MODEM_Pin=98\nHTTP2_Url=https://bob:s3cret@h.example/x\n"}})
    assert answer.status_code == 200
    problems = answer.json()["problems"]
    assert [(p["field"], p["message"].split(" is not")[0]) for p in problems] == [
        ("MODEM_Pin", "'***'"), ("HTTP2_Url", "'https://bob:***@h.example/x'")]
    assert "s3cret" not in answer.text and "98" not in answer.text


@pytest.mark.parametrize(("section", "mistake", "fix", "applied"), [
    ("time", {"NTP_TimeZone": "Mars/Base"}, {"NTP_TimeZone": "Europe/Paris"},
     lambda s: s.settings.time_zone == "Europe/Paris"),
    ("storage", {"STORE_DeviceQuotaMB": "-5"}, {"STORE_DeviceQuotaMB": "80"},
     lambda s: s.settings.store_device_quota_mb == 80),
    ("alarms", {"ALARM_DeviceLost": "maybe"}, {"ALARM_DeviceLost": "1"},
     lambda s: s.settings.alarm_device_lost),
    ("mqtt2", {"MQTT2_Port": "0"}, {"MQTT2_Host": "127.0.0.1", "MQTT2_Port": "1884"},
     lambda s: b"MQTT2_Port=1884" in s.files()[f"CONFIG/{UID}_config.ini"]),
    ("web", {"WEB_Port": "70000"}, {"WEB_User": "installer"},
     lambda s: s.settings.web_user == "installer"),
])
def test_each_section_refuses_a_mistake_beside_its_field_then_saves(
        fresh_gateway: RunningGateway, section: str, mistake: dict[str, str],
        fix: dict[str, str], applied: Callable[[Site], bool]) -> None:
    before = _config_files(fresh_gateway)
    with fresh_gateway.client() as client:
        answer = client.put(f"/api/config/{section}", json=mistake)
        assert answer.status_code == 422, answer.text
        wrong = [k for k in mistake if k in answer.json()["fields"]]
        assert wrong, answer.json()
        page = client.post(f"/configuration/{section}",
                           data={**mistake, "csrf": client.headers["X-CSRF-Token"]})
        assert page.status_code == 422 and f'id="err-{wrong[0]}"' in page.text
        assert _config_files(fresh_gateway) == before
        answer = client.put(f"/api/config/{section}", json=fix)
        assert answer.status_code == 200, answer.text
    assert applied(load_site(fresh_gateway.config_dir))


def test_a_refused_sftp_host_key_shows_beside_ftp_hostkey(fresh_gateway: RunningGateway,
                                                          tmp_path: Path) -> None:
    """An installer sets up SFTP without the server's key: the session is refused, and the
    Configuration page shows the key the server showed, to compare and paste."""
    certs = make_certs(tmp_path / "certs")
    root = tmp_path / "sftp"
    root.mkdir()
    user, password = next(iter(USERS.items()))
    with run_peer("sftp", root, certs) as peer, fresh_gateway.client() as client:
        answer = client.put("/api/config/server2", json={
            "SERVER2_Type": "sftp", "FTP2_Host": "127.0.0.1", "FTP2_Port": str(peer.port),
            "FTP2_User": user, "FTP2_Password": password})
        assert answer.status_code == 200, answer.text
        _eventually(lambda: fresh_gateway.gateway is not None and
                    fresh_gateway.gateway.site is not None and
               fresh_gateway.gateway.site.settings.servers[1].port == peer.port)

        def shown() -> bool:
            client.post("/api/system/connect", json={"server": 2})
            keys = {k["key"]: k for s in client.get("/api/config").json()["sections"]
                    for k in s["keys"]}
            return keys["FTP2_HostKey"].get("seen") == certs.host_key_fingerprint.rstrip("=")

        wait_until_sync(shown, within_s=40, every=0.2)
        page = client.get("/configuration").text
        assert f'<span class="key-seen" id="seen-FTP2_HostKey">last key seen: <code>' \
               f'{certs.host_key_fingerprint.rstrip("=")}</code></span>' in page
        assert 'id="seen-FTP_HostKey"' not in page


def test_whole_files_through_the_api(fresh_gateway: RunningGateway) -> None:
    daq_path = fresh_gateway.config_dir / "CONFIG" / f"{UID}_daq.csv"
    with fresh_gateway.client() as client:
        daq = client.get("/api/config/daq.csv").json()
        assert daq["file"] == f"CONFIG/{UID}_daq.csv" and daq["text"] == daq_path.read_text()
        row = daq["text"].splitlines()[-1]
        added = row.replace("inverter_2", "inverter_9").split(";")
        added[0] = "9"
        wrong = added.copy()
        wrong[3] = "300"
        before = daq_path.read_bytes()
        answer = client.put("/api/config/daq.csv",
                            json={"text": daq["text"] + ";".join(wrong) + "\n"})
        assert answer.status_code == 422
        assert "'300' is outside 1..240" in answer.json()["error"]
        assert daq_path.read_bytes() == before
        answer = client.put("/api/config/daq.csv",
                            json={"text": daq["text"] + ";".join(added) + "\n"})
        assert answer.status_code == 200, answer.text
        _eventually(lambda: any(d["index"] == "9" for d in
                           client.get("/api/devices").json()["devices"]))
        # config.ini: secrets shown as ***, and kept when sent back so.
        assert client.put("/api/config/server2", json={
            "SERVER2_Type": "ftp", "FTP2_Host": "127.0.0.1",
            "FTP2_Password": "s3cret-pass"}).status_code == 200
        config = client.get("/api/config/config.ini").json()["text"]
        assert "FTP2_Password=***\n" in config and "s3cret-pass" not in config
        answer = client.put("/api/config/config.ini",
                            json={"text": config.replace("FTP2_Host=127.0.0.1",
                                                         "FTP2_Host=localhost")})
        assert answer.status_code == 200, answer.text
        site = load_site(fresh_gateway.config_dir)
        assert site.settings.servers[1].host == "localhost"
        assert site.settings.servers[1].password == "s3cret-pass"
        assert client.get("/api/config/server1").json()["name"] == "server1"
        assert client.get("/api/config/nosuch").status_code == 404
        assert client.put("/api/config/daq.csv", json={"rows": []}).status_code == 400


def test_a_field_a_section_does_not_have_is_refused(web_gateway: RunningGateway) -> None:
    """A misspelt key (`FTP_Pasword`) or one no section shows was answered `saved`, and nothing
    was: the installer believed the password set."""
    path = web_gateway.config_dir / "CONFIG" / f"{UID}_config.ini"
    before = path.read_bytes()
    with web_gateway.client() as client:
        for section, field in (("server1", "FTP_Pasword"), ("web", "WEB_PasswordHash"),
                               ("time", "FTP_Host")):
            answer = client.put(f"/api/config/{section}", json={field: "x"})
            assert answer.status_code == 422, (section, answer.text)
            assert list(answer.json()["fields"]) == [field]
            assert "not a key of this section" in answer.json()["fields"][field][0]
    assert path.read_bytes() == before


def test_a_field_the_schedules_serial_or_network_section_lacks_is_refused(
        web_gateway: RunningGateway) -> None:
    """Left out, a misspelt field was answered `saved`: a schedules body of misspelt fields
    (`S1_0_Id`) deleted every schedule, the rows sent replacing the file's."""
    files = [web_gateway.config_dir / "CONFIG" / f"{UID}_{name}" for name in ("var.ini",
                                                                             "daq.csv")]
    before = [path.read_bytes() for path in files]
    with web_gateway.client() as client:
        for section, body in (
                ("schedules", {"S1_0_Id": "1", "s1_0_Type": "everyday"}),
                ("schedules", {"s3_0_Id": "1"}),
                ("schedules", {"s1_\u00b2_Id": "1"}),
                ("serial", {"SERIAL4_speed": "9600"}),
                ("serial", {"SERIAL1_baud": "9600"}),
                ("network", {"LAN1_address": "10.0.0.1"})):
            answer = client.put(f"/api/config/{section}", json=body)
            assert answer.status_code == 422, (section, answer.text)
            field = next(iter(body))
            assert answer.json()["fields"] == {
                field: [f"not a field of this section ({section})"]}, answer.json()
    assert [path.read_bytes() for path in files] == before


def test_serial_and_network_fields_not_sent_keep_their_values(
        fresh_gateway: RunningGateway) -> None:
    """`PUT /api/config/serial` of one field reset the port's others to their defaults, and
    one of network emptied the LAN's address: 'other sections change only the fields sent'."""
    with fresh_gateway.client() as client:
        for section, body in (
                ("serial", {"SERIAL1_speed": "19200", "SERIAL1_parity": "E",
                            "SERIAL1_path": "/dev/ttyUSB0"}),
                ("serial", {"SERIAL1_interFrame(ms)": "5"}),
                ("network", {"LAN1_ip": "192.168.1.20", "LAN1_mask": "255.255.255.0"}),
                ("network", {"LAN1_dns1": "192.168.1.1"})):
            answer = client.put(f"/api/config/{section}", json=body)
            assert answer.status_code == 200, answer.text
        serial = client.get("/api/config/serial").json()["serial"][0]["values"]
        assert (serial["speed"], serial["parity"], serial["interFrame(ms)"], serial["path"]) == \
            ("19200", "E", "5", "/dev/ttyUSB0")
        lan = client.get("/api/config/network").json()["network"][0]["values"]
        assert (lan["ip"], lan["mask"], lan["dns1"]) == ("192.168.1.20", "255.255.255.0",
                                                         "192.168.1.1")


def test_a_whole_config_ini_cannot_set_the_password_hash_or_update_command(
        web_gateway: RunningGateway) -> None:
    """The keys no section of the page shows: the hash changes only with the current password,
    and the shell command run at updates is a setting of the file on the box. The whole file
    sent to the API set both: a password without the current one (other sessions going on),
    and a command the next uploaded package ran."""
    path = web_gateway.config_dir / "CONFIG" / f"{UID}_config.ini"
    with web_gateway.client() as client:
        config = client.get("/api/config/config.ini").json()["text"]
        before = path.read_bytes()
        for line in (f"WEB_PasswordHash={hash_password('a-long-password')}",
                     "SYSTEM_UpdateCommand=touch /tmp/x {package}"):
            answer = client.put("/api/config/config.ini", json={"text": f"{config}{line}\n"})
            assert answer.status_code == 422, answer.text
            key = line.partition("=")[0]
            assert answer.json()["problems"][0]["field"] == key
            assert path.read_bytes() == before
        # The file sent back as read is taken.
        assert client.put("/api/config/config.ini", json={"text": config}).status_code == 200


def test_definition_files_through_the_api(fresh_gateway: RunningGateway) -> None:
    folder = fresh_gateway.config_dir / "DEF"
    with fresh_gateway.client() as client:
        inverter = client.get("/api/defs/demo_inverter.csv").json()
        assert inverter["text"] == (folder / "demo_inverter.csv").read_text()
        assert client.get("/api/defs/none.csv").status_code == 404
        answer = client.put("/api/defs/copy.csv", json={"text": inverter["text"]})
        assert answer.status_code == 200, answer.text
        assert (folder / "copy.csv").read_text() == inverter["text"]
        assert "copy.csv" in [d["file"] for d in client.get("/api/defs").json()["definitions"]]
        assert client.put("/api/defs/bad name!.csv", json={"text": "x"}).status_code == 422
        # A file no device uses yet is checked on its own.
        broken = client.put("/api/defs/broken.csv", json={"text": "bogus;x;y;z\n"})
        assert broken.status_code == 422
        assert broken.json()["problems"][0]["field"] == "Protocol"
        assert not (folder / "broken.csv").exists()
        used = client.delete("/api/defs/demo_inverter.csv")
        assert used.status_code == 409
        assert "used by inverter_1, inverter_2" in used.json()["error"]
        assert client.delete("/api/defs/copy.csv").status_code == 200
        assert not (folder / "copy.csv").exists()
        assert client.delete("/api/defs/copy.csv").status_code == 404


def test_a_big_config_ini_is_read_beside_the_loop(fresh_gateway: RunningGateway,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A config.ini at its 1 MiB cap sent whole: its JSON, its secrets and the keys a browser
    may not change were read on the gateway's loop (at 9 MiB, before the cap, it stood still
    for over a second: every device skipped a poll cycle). They are read in a worker thread."""
    threads: dict[str, set[str]] = {}

    def watched(module: object, name: str) -> None:
        function = getattr(module, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            if len(args[0]) > 2**19:  # type: ignore[arg-type]
                threads.setdefault(name, set()).add(threading.current_thread().name)
            return function(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    watched(pipeline.web.common, "load_command_json")
    watched(pipeline.web.facade, "unmask_secrets")
    watched(pipeline.web.facade, "hidden_key_changes")
    with fresh_gateway.client() as client:
        config = client.get("/api/config/config.ini").json()["text"]
        big = config + "".join(f"# note {k} {'x' * 80}\n" for k in range(10_000))
        assert 2**19 < len(big) < 2**20
        answer = client.put("/api/config/config.ini", json={"text": big}, timeout=120)
        assert answer.status_code == 200, answer.text[:300]
        assert client.put("/api/config/config.ini", json={"text": config},
                          timeout=120).status_code == 200
    assert set(threads) == {"load_command_json", "unmask_secrets", "hidden_key_changes"}
    assert "web-test-gateway" not in set().union(*threads.values()), threads
