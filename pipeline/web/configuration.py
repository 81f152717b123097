"""Configuration (docs/behaviour.md §10.2): servers, MQTT, schedules with their next connection
times, serial ports, network, time zone, storage, alarms, modem, web access; each section saved
alone through `config`, errors beside their fields, nothing saved partially."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from config.errors import Severity
from config.var_ini import FIELDS as SCHEDULE_FIELDS
from pipeline.web.common import (
    CONFIG_FILE_MAX_BYTES,
    LoginBlocked,
    client_of,
    context,
    facade,
    json_error,
    json_ok,
    page,
    rejected,
    request_json,
    session_of,
    try_login,
    whole_file_text,
)
from pipeline.web.config_forms import (
    CONFIG_FILES,
    RESTART_KEYS,
    SECTION_BY_NAME,
    is_secret,
    schedule_rows,
)
from pipeline.web.editing import Edit, Verdict, problem_json
from pipeline.web.facade import NotFound, time_zones

routes = web.RouteTableDef()

#: Sections of the page that are not config.ini keys.
OTHER_SECTIONS = ("schedules", "serial", "network")


#: A refused SFTP host key in a server's last result (exporters/transports/sftp.py's words).
_SEEN_KEY = re.compile(r"host key (SHA256:[A-Za-z0-9+/]+)")


async def _data(request: web.Request) -> dict[str, Any]:
    data = await asyncio.to_thread(facade(request).configuration)
    _with_host_keys_seen(data, await facade(request).status())
    data["restart"] = []
    return data


def _with_host_keys_seen(data: dict[str, Any], status: Mapping[str, Any]) -> None:
    """Beside `FTP_HostKey`, the key the server showed when its last session refused it
    (docs/behaviour.md §10.2), for the installer to compare and copy."""
    seen = {}
    for server in status.get("servers", []):
        found = _SEEN_KEY.search(str(server.get("last", "")))
        if found:
            seen[f"FTP{'' if server.get('srv') == 1 else '2'}_HostKey"] = found.group(1)
    for section in data["sections"]:
        for key in section["keys"]:
            if key["key"] in seen:
                key["seen"] = seen[key["key"]]


@routes.get("/configuration")
async def configuration_page(request: web.Request) -> web.StreamResponse:
    data = await _data(request)
    data["saved"] = request.query.get("saved", "")
    data["restart"] = [key for key in request.query.get("restart", "").split(",")
                       if key in RESTART_KEYS]
    return page(request, "configuration.html", data)


def _with_submitted(data: dict[str, Any], name: str, form: Mapping[str, str]) -> None:
    """Show the section as it was typed, so a refused save loses nothing."""
    if name in SECTION_BY_NAME:
        section = next(s for s in data["sections"] if s["name"] == name)
        for key in section["keys"]:
            if key["key"] in form and not is_secret(key["key"]):
                key["value"] = form[key["key"]]
    elif name == "schedules":
        for slot in ("1", "2"):
            data["schedules"][slot] = [
                {field: form.get(f"s{slot}_{row}_{field}", "") for field in SCHEDULE_FIELDS}
                for row in schedule_rows(form, slot)] or data["schedules"][slot]
    else:
        key = "serial" if name == "serial" else "network"
        label = "port" if name == "serial" else "lan"
        for row in data[key]:
            for column in row["values"]:
                submitted = form.get(f"{row[label]}_{column}")
                if submitted is not None:
                    row["values"][column] = submitted


def _form_texts(form: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


async def _restart_values(request: web.Request, name: str) -> dict[str, str]:
    """The section's keys that apply only after a restart, as on disk: a save that changes
    one says so instead of promising it within seconds."""
    section = SECTION_BY_NAME.get(name)
    if section is None or not RESTART_KEYS.intersection(section.keys):
        return {}
    data = await asyncio.to_thread(facade(request).configuration)
    shown = next(s for s in data["sections"] if s["name"] == name)
    return {k["key"]: k["value"] for k in shown["keys"] if k["key"] in RESTART_KEYS}


async def _new_password(request: web.Request,
                        form: Mapping[str, str]) -> tuple[Verdict, str, int]:
    """The verdict on a password change, the new hash when it is made, and the status of a
    refusal. The current password is asked first (throttled as a login): a browser left
    logged in must not let whoever sits at it take the gateway."""
    current = form.get("currentPassword", "")
    if not current:
        return Verdict(fields={"currentPassword": ["required"]}), "", 422
    ctx = context(request)
    try:
        right = await try_login(ctx, client_of(request), ctx.facade.web_user(), current)
    except LoginBlocked as blocked:
        return Verdict(fields={"currentPassword": [
            f"too many wrong passwords; try again in {max(1, round(blocked.wait_s))} s"]}), \
            "", 429
    if not right:
        return Verdict(fields={"currentPassword": ["wrong password"]}), "", 422
    verdict, stored = await facade(request).change_password(form.get("newPassword", ""),
                                                            form.get("confirmPassword", ""))
    return verdict, stored, 422


@routes.post("/configuration/password")
async def change_password(request: web.Request) -> web.StreamResponse:
    form = _form_texts(await request.post())
    verdict, stored, status = await _new_password(request, form)
    if verdict.ok:
        _password_changed(request, stored)
        raise web.HTTPSeeOther("/configuration?saved=password#password")
    data = await _data(request)
    data.update(fields=dict(verdict.fields), problems=[str(p) for p in verdict.others],
                failed="password")
    return page(request, "configuration.html", data, status=status)


def _password_changed(request: web.Request, stored: str) -> None:
    """Every other session ends; the new hash is checked at once (the reload of the
    configuration that holds it follows within a second)."""
    ctx = context(request)
    ctx.local_password_hash = stored
    ctx.extra.pop("basic_ok", None)
    session = session_of(request)
    ctx.sessions.close_all(keep=session.token if session is not None else None)


@routes.post("/configuration/{section}")
async def save_section(request: web.Request) -> web.StreamResponse:
    name = request.match_info["section"]
    form = _form_texts(await request.post())
    before = await _restart_values(request, name)
    verdict = await facade(request).save_section(name, form)
    if verdict.ok:
        # What the file says now, not what was typed: a default typed (`WEB_Port=8080`) is
        # not written, and was said to wait for a restart at every save.
        after = await _restart_values(request, name)
        changed = ",".join(key for key, value in before.items() if after.get(key) != value)
        restart = f"&restart={changed}" if changed else ""
        raise web.HTTPSeeOther(f"/configuration?saved={name}{restart}#{name}")
    data = await _data(request)
    _with_submitted(data, name, form)
    fields = {key: list(messages) for key, messages in verdict.fields.items()}
    for key, value in form.items():
        # Never sent back, a typed password would be lost unseen: the next save would keep
        # the old one (or none).
        if value and is_secret(key) and not fields.get(key):
            fields[key] = ["not saved with the rest: type it again (passwords are never "
                           "sent back to the browser)"]
    data.update(fields=fields, problems=[str(p) for p in verdict.others], failed=name)
    return page(request, "configuration.html", data, status=422)


# ----------------------------------------------------------------------------- API


@routes.get("/api/config")
async def api_configuration(request: web.Request) -> web.StreamResponse:
    data = await _data(request)
    for unused in ("fields", "problems", "saved"):
        data.pop(unused, None)
    return json_ok(data)


async def _json_form(request: web.Request) -> dict[str, str] | web.Response:
    try:
        body = await request_json(request)
    except ValueError:
        return json_error("expected a JSON object of field names and texts", 400)
    if not isinstance(body, dict) or not all(isinstance(v, str | int | float) for v in
                                             body.values()):
        return json_error("expected a JSON object of field names and texts", 400)
    return {str(k): str(v) for k, v in body.items()}


@routes.get("/api/config/{name}")
async def api_configuration_part(request: web.Request) -> web.StreamResponse:
    """A whole file (`config.ini`, `daq.csv`, `var.ini`, `scl.ini`: `{file, text}`, secrets
    as `***`), or one section of the page."""
    name = request.match_info["name"]
    if name in CONFIG_FILES:
        path, text = await asyncio.to_thread(facade(request).config_file, name)
        return json_ok({"file": path, "text": text})
    data = await _data(request)
    section = next((s for s in data["sections"] if s["name"] == name), None)
    if section is not None:
        return json_ok(section)
    if name in OTHER_SECTIONS:
        return json_ok({"name": name, name: data[name]})
    raise NotFound(f"no configuration file or section '{name}'")


@routes.put("/api/config/{section}")
async def api_save_section(request: web.Request) -> web.StreamResponse:
    """A section's fields as the page names them (`FTP_Port`, `s1_0_StartTime`,
    `SERIAL1_speed`, `LAN1_ip`); the section is replaced as the page's form would. A file's
    name (`daq.csv`) with `{"text": ...}` replaces that file whole."""
    if request.match_info["section"] in CONFIG_FILES:
        return await _save_file(request, request.match_info["section"])
    form = await _json_form(request)
    if isinstance(form, web.Response):
        return form
    verdict = await facade(request).save_section(request.match_info["section"], form)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"saved": request.match_info["section"], **verdict.saved_json()})


async def _save_file(request: web.Request, name: str) -> web.StreamResponse:
    text = await whole_file_text(request, name, CONFIG_FILE_MAX_BYTES)
    if isinstance(text, web.Response):
        return text
    verdict = await facade(request).save_config_file(name, text)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"saved": name, **verdict.saved_json()})


@routes.get("/api/schedule/next")
async def api_next_connections(request: web.Request) -> web.StreamResponse:
    """Each configured server's next 10 connection times under the saved schedules."""
    return json_ok({"servers": await asyncio.to_thread(facade(request).next_connections)})


@routes.post("/api/schedule/next")
async def api_preview_schedules(request: web.Request) -> web.StreamResponse:
    """The next connection times of submitted schedule rows (`s<slot>_<row>_<Field>`), not
    saved: 422 with field errors when `config` refuses them."""
    form = await _json_form(request)
    if isinstance(form, web.Response):
        return form
    verdict, times = await facade(request).preview_schedules(form)
    if not verdict.ok:
        return rejected(verdict)
    return json_ok({"servers": times})


@routes.post("/api/config/password")
async def api_change_password(request: web.Request) -> web.StreamResponse:
    form = await _json_form(request)
    if isinstance(form, web.Response):
        return form
    verdict, stored, status = await _new_password(request, form)
    if not verdict.ok:
        answer = rejected(verdict)
        answer.set_status(status)
        return answer
    _password_changed(request, stored)
    return json_ok({"saved": "password"})


#: Where a file given to `/api/config/validate` may go.
_TREE_FOLDERS = ("CONFIG/", "DEF/", "SCRIPT/", "CERT/")


@routes.post("/api/config/validate")
async def api_validate(request: web.Request) -> web.StreamResponse:
    """`{"files": {"CONFIG/<uid>_daq.csv": "<text>", "DEF/x.csv": ...}}`: every problem,
    warnings included, of the configuration with those files in place; nothing is written."""
    try:
        body = await request_json(request)
    except ValueError:
        body = None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return json_error('expected {"files": {"<folder>/<name>": "<text>"}}', 400)
    for name in files:
        folder, _, base = name.partition("/")
        if f"{folder}/" not in _TREE_FOLDERS or not base or "/" in base or base in (".", ".."):
            return json_error(f"{name}: not a file of CONFIG/, DEF/, SCRIPT/ or CERT/", 400)
    edit = Edit(files={name: text.encode() for name, text in files.items()})
    problems = await asyncio.to_thread(facade(request).editor().problems, edit)
    return json_ok({"ok": not any(p.severity is Severity.ERROR for p in problems),
                    "problems": [problem_json(p) for p in problems]})


@routes.get("/api/timezones")
async def api_time_zones(request: web.Request) -> web.StreamResponse:
    """The IANA time zones this host knows (the time zone field's suggestions)."""
    return json_ok({"timeZones": await asyncio.to_thread(time_zones)})
