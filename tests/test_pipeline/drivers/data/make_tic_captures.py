"""Writes the TIC captures of this folder: `python make_tic_captures.py` (re-run only on purpose).

Frames follow the Enedis TIC specification (Enedis-NOI-CPT_54E) for a historic single-rate Linky
and a standard-mode three-phase Linky; checksums are computed here, independently of the decoder.
Each capture starts mid-frame (a reader plugged in while the meter talks) and holds the faults the
decoder must survive: a bad checksum, an EOT interruption, noise between frames, a cut end.
"""

from pathlib import Path

HERE = Path(__file__).parent


def cks(span: bytes) -> bytes:
    return bytes([(sum(span) & 0x3F) + 0x20])


def hist(label: str, data: str) -> bytes:
    span = f"{label} {data}".encode()
    return b"\n" + span + b" " + cks(span) + b"\r"


def std(label: str, data: str, horodate: str | None = None) -> bytes:
    fields = [label] + ([horodate] if horodate is not None else []) + [data]
    span = ("\t".join(fields) + "\t").encode()
    return b"\n" + span + cks(span) + b"\r"


def historic_frame(base: int, iinst: int, papp: int) -> list[bytes]:
    return [hist("ADCO", "031664001115"), hist("OPTARIF", "BASE"), hist("ISOUSC", "30"),
            hist("BASE", f"{base:09d}"), hist("PTEC", "TH.."), hist("IINST", f"{iinst:03d}"),
            hist("IMAX", "090"), hist("PAPP", f"{papp:05d}"), hist("HHPHC", "A"),
            hist("MOTDETAT", "000000")]


def standard_frame(east: int, sinsts: int, second: int) -> list[bytes]:
    date = f"E210205{8:02d}30{second:02d}"
    return [std("ADSC", "031664001115"), std("VTIC", "02"), std("DATE", "", date),
            std("NGTF", "      BASE      "), std("LTARF", "      BASE      "),
            std("EAST", f"{east:09d}"), std("EASF01", f"{east:09d}"), std("EASF02", "000000000"),
            std("EASD01", f"{east:09d}"), std("IRMS1", "004"), std("IRMS2", "002"),
            std("IRMS3", "001"), std("URMS1", "232"), std("URMS2", "231"), std("URMS3", "233"),
            std("PREF", "12"), std("PCOUP", "12"), std("SINSTS", f"{sinsts:05d}"),
            std("SMAXSN", "07360", "E210205083000"), std("SMAXSN-1", "06120", "E210204191500"),
            std("CCASN", "01234", "E210205083000"), std("UMOY1", "231", "E210205083000"),
            std("STGE", "003A0001"), std("MSG1", "PAS DE          MESSAGE         "),
            std("PRM", "09876543210123"), std("RELAIS", "000"), std("NTARF", "01"),
            std("NJOURF", "00"), std("NJOURF+1", "00"), std("PJOURF+1", "00008001 NONUTILE NONUTILE")]


def frame(groups: list[bytes]) -> bytes:
    return b"\x02" + b"".join(groups) + b"\x03"


def historic() -> bytes:
    out = b"".join(historic_frame(2079, 4, 900)[6:]) + b"\x03"      # tail of a frame: skipped
    out += frame(historic_frame(2080, 4, 910))                       # frame 1: clean
    bad = historic_frame(2081, 5, 1150)
    bad[3] = bad[3][:-2] + b"Z\r"                                    # BASE: wrong checksum
    out += frame(bad)                                                # frame 2: 1 checksum error
    out += b"\x00\xff\x13"                                           # line noise between frames
    cut = historic_frame(2082, 5, 1160)
    out += b"\x02" + b"".join(cut[:4]) + cut[4][:4] + b"\x04"        # frame 3: EOT inside PTEC
    out += frame(historic_frame(2083, 6, 1390))                      # frame 4: clean
    return out + b"\x02" + b"".join(historic_frame(2084, 6, 1400)[:2]) + b"\nIIN"  # 5: cut end


def standard() -> bytes:
    out = b"".join(standard_frame(1500, 720, 0)[20:]) + b"\x03"
    out += frame(standard_frame(1501, 720, 2))                       # frame 1: clean
    bad = standard_frame(1502, 740, 4)
    bad[9] = bad[9].replace(b"IRMS1\t004", b"IRMS1\t005")           # IRMS1: checksum no longer fits
    bad[12] = std("Urms1", "232")                                    # label not A-Z0-9+-
    bad[18] = std("SMAXSN", "07360", "E2102050830")                  # horodate of 11 characters
    out += frame(bad)                                                # frame 2: 1 checksum, 2 malformed
    out += frame(standard_frame(1503, 760, 6))                       # frame 3: clean
    nxt = standard_frame(1504, 780, 8)
    out += b"\x02" + b"".join(nxt[:7]) + b"\x02"                     # frame 4: cut by a new STX
    out += b"".join(nxt) + b"\x03"                                   # frame 5: clean
    return out


if __name__ == "__main__":
    (HERE / "tic_historic.bin").write_bytes(historic())
    (HERE / "tic_standard.bin").write_bytes(standard())
