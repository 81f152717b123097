"""Unknown keys: reported with the closest known key within two edits (docs/formats.md §4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from config.config_ini import KEYS, parse
from config.key_hint import MAX_DISTANCE, closest_key, edit_distance, indexed_unknown_key


def _reference_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@settings(deadline=None)  # a loaded box must not fail a pure function on time
@given(st.text("abcAB_", max_size=12), st.text("abcAB_", max_size=12))
def test_bounded_distance_agrees_with_the_plain_one_up_to_the_limit(a: str, b: str) -> None:
    assert edit_distance(a, b) == min(_reference_distance(a, b), MAX_DISTANCE + 1)


@settings(deadline=None)
@given(st.sampled_from(sorted(KEYS)), st.data())
def test_one_or_two_typos_in_a_known_key_get_a_hint_within_two_edits(
        key: str, data: st.DataObject) -> None:
    typo = key
    for _ in range(data.draw(st.integers(1, 2))):
        at = data.draw(st.integers(0, len(typo) - 1))
        typo = typo[:at] + data.draw(st.sampled_from("xqz_")) + typo[at + 1:]
    hint = closest_key(typo, KEYS)
    assert hint is not None and edit_distance(typo.casefold(), hint.casefold()) <= 2
    if typo in KEYS:
        assert hint == typo


def test_messages() -> None:
    assert closest_key("FTP_Hots", KEYS) == "FTP_Host"
    assert closest_key("ftp_host", KEYS) == "FTP_Host"
    assert closest_key("FTP2_Hots", KEYS) == "FTP2_Host"
    assert closest_key("VENDOR_Extra", KEYS) is None
    assert indexed_unknown_key("SCHEDUL_Params[3]", ("SCHEDULE_Params", "SCHEDULE2_Params")) == \
        "unknown key (did you mean SCHEDULE_Params[3]?); ignored"
    assert indexed_unknown_key("OTHER", ("SCRIPT_File",)) == "unknown key; ignored"


def test_parse_warns_and_keeps_the_misspelt_line() -> None:
    cfg, findings = parse(b"SERVER_Type=none\nFTP_Hots=is.example.net\n", "WPM00BDE4_config.ini")
    assert [str(p) for p in findings.problems] == [
        "WPM00BDE4_config.ini:2: FTP_Hots: unknown key (did you mean FTP_Host?); ignored"]
    assert not findings.rejected and cfg.unknown_keys == ("FTP_Hots",)
    assert cfg.settings("WPM00BDE4").servers[0].host == ""
