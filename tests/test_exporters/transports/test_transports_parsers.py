"""Property tests of what the transports parse from configuration and from peers."""

from __future__ import annotations

import calendar
import contextlib
import datetime
import xml.etree.ElementTree as ET
from email.utils import formatdate
from urllib.parse import quote

import asyncssh
from hypothesis import given
from hypothesis import strategies as st

from exporters.transports import TransportError
from exporters.transports._base import check_tree_path
from exporters.transports.ftp import _parse_mdtm
from exporters.transports.sftp import parse_host_key
from exporters.transports.webdav import _parse_listing

_NAME = st.text(st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs", "Cc")),
                min_size=1, max_size=30).filter(lambda n: n not in (".", ".."))


@given(st.text(max_size=200))
def test_host_key_setting_parses_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_host_key(text)
    except ValueError:
        return
    assert isinstance(parsed, (str, asyncssh.SSHKey))


def test_host_key_line_round_trips() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key().decode().strip()
    parsed = parse_host_key(line)
    assert isinstance(parsed, asyncssh.SSHKey)
    assert parsed.export_public_key().decode().strip().split()[:2] == line.split()[:2]


@given(st.text(max_size=40))
def test_mdtm_text_gives_a_time_or_none(text: str) -> None:
    assert _parse_mdtm(text) is None or isinstance(_parse_mdtm(text), float)


@given(st.datetimes(min_value=datetime.datetime(1971, 1, 1),
                    max_value=datetime.datetime(2099, 12, 31)))
def test_mdtm_round_trips_whole_seconds(moment: datetime.datetime) -> None:
    text = moment.strftime("%Y%m%d%H%M%S")
    assert _parse_mdtm(text) == calendar.timegm(moment.timetuple())


@given(st.lists(_NAME, min_size=1, max_size=4))
def test_tree_paths_of_plain_names_are_accepted(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert check_tree_path(1, "upload", path) == path


@given(st.text(max_size=60))
def test_any_path_is_accepted_or_refused_with_our_error(path: str) -> None:
    try:
        check_tree_path(1, "upload", path)
    except TransportError as err:
        assert not err.retriable
        return
    assert path == "/" or (path.startswith("/") and ".." not in path.split("/"))


@given(st.binary(max_size=300))
def test_garbage_propfind_answer_raises_only_a_parse_error(body: bytes) -> None:
    with contextlib.suppress(ET.ParseError):
        _parse_listing(body, "/root/DATA")


@given(st.dictionaries(_NAME, st.integers(min_value=0, max_value=2**40), max_size=6),
       st.booleans())
def test_propfind_listing_gives_back_names_and_sizes(files: dict[str, int],
                                                     absolute_hrefs: bool) -> None:
    base = "https://dav.example.org:8443" if absolute_hrefs else ""
    directory = "/root dir/DATA"

    def response(href: str, size: int | None) -> str:
        prop = ("<D:resourcetype><D:collection/></D:resourcetype>" if size is None else
                f"<D:resourcetype/><D:getcontentlength>{size}</D:getcontentlength>"
                f"<D:getlastmodified>{formatdate(86400, usegmt=True)}</D:getlastmodified>")
        return (f"<D:response><D:href>{base}{href}</D:href><D:propstat><D:prop>{prop}"
                "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")
    body = ('<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">'
            + response(quote(directory) + "/", None)
            + response(quote(directory + "/sub") + "/", None)
            + "".join(response(quote(f"{directory}/{name}"), size)
                      for name, size in files.items())
            + "</D:multistatus>")
    listing = _parse_listing(body.encode(), quote(directory))
    assert [(f.name, f.size) for f in listing] == sorted(files.items())
    assert all(f.mtime_s == 86400 for f in listing)
