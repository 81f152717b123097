"""Defects found by walking every page as an installer would: each test names what the page
showed wrong."""

from __future__ import annotations

import io
import time
import zipfile
from html.parser import HTMLParser

from web_support import RunningGateway, add_io

from pipeline.web.server import MAX_PACKAGE_BODY_BYTES


class _Form(HTMLParser):
    """The values a page's form fields show, by id: an input's value, a select's chosen option."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("id"):
            self.values[str(found["id"])] = found.get("value") or ""
        elif tag == "select":
            self._select = found.get("id")
        elif tag == "option" and self._select and "selected" in found:
            self.values[self._select] = found.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def _fields(html: str) -> dict[str, str]:
    form = _Form()
    form.feed(html)
    return form.values


def _notice(html: str, element_id: str) -> str:
    return html.split(f'id="{element_id}">', 1)[1].split("</p>", 1)[0]


def test_a_refused_download_refills_only_its_own_form(web_gateway: RunningGateway) -> None:
    """The log and export forms (and connect's server) share query names: a refused export
    once refilled the log form with its range and chose server 2 in Connect now."""
    with web_gateway.client() as client:
        answer = client.get("/system/export", params={"server": "2", "from": "yesterday",
                                                      "to": "2021-01-01"})
        assert answer.status_code == 422
        shown = _fields(answer.text)
        assert shown["f-export-from"] == "yesterday" and shown["f-export-to"] == "2021-01-01"
        assert shown["f-export-server"] == "2"
        assert shown["f-logs-from"] == "" and shown["f-logs-to"] == ""
        assert shown.get("f-server", "1") == "1"
        assert 'id="e-export-from"' in answer.text

        answer = client.get("/system/logs", params={"from": "2020-01-01", "to": "2019-01-01"})
        assert answer.status_code == 422
        shown = _fields(answer.text)
        assert shown["f-logs-from"] == "2020-01-01" and shown["f-logs-to"] == "2019-01-01"
        assert shown["f-export-from"] == "" and shown["f-export-to"] == ""
        assert 'id="e-logs-to"' in answer.text


def test_the_system_page_states_the_package_limit_that_applies(
        web_gateway: RunningGateway) -> None:
    """The Update card said 4 MB while packages of up to 200 MiB are taken."""
    with web_gateway.client() as client:
        text = client.get("/system").text
    assert f"({MAX_PACKAGE_BODY_BYTES // 2**20} MiB at most)" in text


def test_a_saved_key_that_needs_a_restart_is_not_promised_within_seconds(
        fresh_gateway: RunningGateway) -> None:
    """Saving WEB_Port said 'the gateway applies it within a few seconds'; it applies after a
    restart (the field's hint says so, the notice contradicted it)."""
    with fresh_gateway.client() as client:
        csrf = client.headers["X-CSRF-Token"]
        # The default typed into a file without the key: nothing is written, nothing waits
        # (it was said to wait for a restart at every such save).
        answer = client.post("/configuration/web", data={"csrf": csrf, "WEB_Port": "8080"},
                             follow_redirects=True)
        assert _notice(answer.text, "saved-web") == \
            "Saved; the gateway applies it within a few seconds."
        answer = client.post("/configuration/web", data={"csrf": csrf, "WEB_Port": "8099",
                                                          "WEB_Bind": "", "WEB_User": ""},
                             follow_redirects=True)
        assert answer.status_code == 200
        assert _notice(answer.text, "saved-web") == "Saved; the gateway applies it within a " \
            "few seconds, except WEB_Port: it applies after a restart of the service (System page)."
        # Saved again unchanged, or another key of the section: nothing waits for a restart.
        answer = client.post("/configuration/web", data={"csrf": csrf, "WEB_Port": "8099",
                                                          "WEB_User": "admin"},
                             follow_redirects=True)
        assert _notice(answer.text, "saved-web") == \
            "Saved; the gateway applies it within a few seconds."


def test_the_gateways_own_io_offers_no_duplicate_nor_parameters_to_read(
        fresh_gateway: RunningGateway) -> None:
    """The I/O's Duplicate led to a form that no save could pass (there is one I/O), and its
    Read parameters asked for parameters its definition does not have."""
    with fresh_gateway.client() as client:
        add_io(fresh_gateway, client)
        listing = client.get("/devices").text
        assert 'href="/devices/1/duplicate"' in listing
        assert 'href="/devices/IO/duplicate"' not in listing
        page = client.get("/devices/IO").text
        assert 'href="/devices/IO/duplicate"' not in page and 'id="read-parameters"' not in page
        assert 'id="io-editor"' in page
        page = client.get("/devices/1").text
        assert 'href="/devices/1/duplicate"' in page and 'id="read-parameters"' in page
        stale = client.get("/devices/IO/duplicate")
        assert stale.status_code == 409
        assert "it cannot be duplicated" in stale.text
        answer = client.post("/api/devices/IO/duplicate")
        assert answer.status_code == 409, answer.text
        assert "it cannot be duplicated" in answer.json()["error"]


def test_a_password_typed_into_a_refused_section_is_asked_for_again(
        fresh_gateway: RunningGateway) -> None:
    """A refused section came back with its password field empty and nothing said: fixing
    the other field and saving again kept no password at all."""
    with fresh_gateway.client() as client:
        csrf = client.headers["X-CSRF-Token"]
        answer = client.post("/configuration/server1", data={
            "csrf": csrf, "SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": "twenty-one",
            "FTP_User": "pv", "FTP_Password": "Typed-Secret-9"})
        assert answer.status_code == 422
        assert "Typed-Secret-9" not in answer.text
        shown = _fields(answer.text)
        assert shown["f-FTP_Port"] == "twenty-one" and shown["f-FTP_User"] == "pv"
        assert 'id="f-FTP_Password" type="password" value=""' in answer.text
        password_field = answer.text.split('id="f-FTP_Password"', 1)[1].split(">", 1)[0]
        assert 'aria-invalid="true"' in password_field
        assert 'id="err-FTP_Password">not saved with the rest: type it again' in answer.text
        # A refused section without a typed password says nothing of it.
        answer = client.post("/configuration/server1", data={
            "csrf": csrf, "SERVER_Type": "ftp", "FTP_Host": "127.0.0.1", "FTP_Port": "x",
            "FTP_Password": ""})
        assert answer.status_code == 422 and 'id="err-FTP_Password"' not in answer.text


def test_downloading_traces_before_any_was_taken_says_so(fresh_gateway: RunningGateway) -> None:
    """'Download every trace' before any trace gave an empty zip and no word of why."""
    with fresh_gateway.client() as client:
        answer = client.get("/diagnostics/download")
        assert answer.status_code == 404
        assert 'id="diagnostics-message">No trace stored yet: start one below' in answer.text
        answer = client.get("/diagnostics/download", params={"interface": "tic"})
        assert answer.status_code == 404
        assert "No trace stored on tic yet" in answer.text
        assert client.get("/diagnostics/download", params={"interface": "bogus"}).status_code \
            == 422
        assert client.post("/api/traces", json={"interface": "ethernet", "minutes": 1}) \
            .status_code == 200
        deadline = time.monotonic() + 20
        while True:
            answer = client.get("/diagnostics/download", params={"interface": "ethernet"})
            if answer.status_code == 200:
                break
            assert time.monotonic() < deadline, "no frame traced"
            time.sleep(0.3)
        assert answer.headers["content-type"] == "application/zip"
        assert zipfile.ZipFile(io.BytesIO(answer.content)).namelist()


def test_a_missing_static_file_is_a_plain_404(web_gateway: RunningGateway) -> None:
    """A missing script or style was answered with an empty chunked octet-stream that Chromium
    reports as ERR_INVALID_RESPONSE; the files the pages load are still served, cacheable."""
    with web_gateway.client(login=False) as client:
        answer = client.get("/static/nothing.js")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text == "no static file 'nothing.js'\n"
        assert client.get("/static/..%2Fserver.py").status_code == 404
        script = client.get("/static/sunpm.js")
        assert script.status_code == 200 and "window.sunpm" in script.text
        assert "no-store" not in script.headers.get("cache-control", "")
        assert script.headers["content-type"] == "application/javascript"
        assert client.get("/static/uPlot.min.css").headers["content-type"] == "text/css"
