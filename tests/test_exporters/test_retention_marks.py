"""The marks exporters.retention gives the store are sound: a segment they call delivered holds
only members of delivered windows (membership as exporters.views.windows defines it)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporters.retention import DeliveryMarks, JournalMark, WindowMark
from store.delivery import PreviousWindow, Stream, WindowSpec
from store.events import Watermark


@st.composite
def history(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[WindowSpec], int]:
    """Records (seq, ts) of one device, the DATA windows built over them, how many delivered."""
    times = draw(st.lists(st.integers(0, 200), min_size=1, max_size=40))
    records = [(seq, ts) for seq, ts in enumerate(times, start=1)]
    n_windows = draw(st.integers(1, 6))
    ends = sorted(draw(st.lists(st.integers(1, 250), min_size=n_windows, max_size=n_windows,
                                unique=True)))
    marks = sorted(draw(st.lists(st.integers(0, len(records)), min_size=n_windows,
                                 max_size=n_windows)))
    specs: list[WindowSpec] = []
    for end, covered in zip(ends, marks, strict=True):
        prev = None if not specs else PreviousWindow(end_ns=specs[-1].end_ns,
                                                      membership=specs[-1].membership)
        specs.append(WindowSpec(server=1, stream=Stream.DATA, start_ns=0, end_ns=end,
                                membership=Watermark(devices={"7": covered}), after=prev,
                                config="c"))
    return records, specs, draw(st.integers(0, n_windows))


@given(history(), st.data())
def test_a_segment_called_delivered_holds_only_members_of_delivered_windows(
        h: tuple[list[tuple[int, int]], list[WindowSpec], int], data: st.DataObject) -> None:
    records, specs, delivered = h
    cursor = specs[delivered - 1] if delivered else None
    mark = None if cursor is None else WindowMark(end_ns=cursor.end_ns,
                                                  devices=dict(cursor.membership.devices),
                                                  journal_seq=-1)
    marks = DeliveryMarks(data=(mark,))
    first = data.draw(st.integers(1, len(records)))
    last = data.draw(st.integers(first, len(records)))
    segment = records[first - 1:last]
    if marks.records_delivered("7", last, max(ts for _, ts in segment)):
        for seq, ts in segment:
            assert any(spec.has_record("7", seq, ts) for spec in specs[:delivered])
    # Everything delivered so far, as one segment, is called delivered (no needless stop).
    members = [r for r in records if any(s.has_record("7", *r) for s in specs[:delivered])]
    prefix = records[:len(members)]
    if members and members == prefix:
        assert marks.records_delivered("7", prefix[-1][0], max(ts for _, ts in prefix))


def test_every_server_must_have_it() -> None:
    one = WindowMark(end_ns=100, devices={"7": 10}, journal_seq=50)
    assert DeliveryMarks(data=(one,)).records_delivered("7", 10, 99)
    assert not DeliveryMarks(data=(one, None)).records_delivered("7", 10, 99)
    assert not DeliveryMarks(data=(one,)).records_delivered("7", 11, 99)
    assert not DeliveryMarks(data=(one,)).records_delivered("7", 10, 100)
    assert not DeliveryMarks(data=(one,)).records_delivered("8", 1, 0)
    journal = DeliveryMarks(journal=(JournalMark(server=1, stream=Stream.ALARM, window=one),
                                     JournalMark(server=2, stream=Stream.ALARM, through_seq=40)))
    assert journal.journal_delivered(40, 99)        # server 1 by window, server 2 by seq
    assert not journal.journal_delivered(41, 99)
    assert not journal.journal_delivered(40, 100)   # an event at the window's end: not in it
    assert DeliveryMarks().journal_delivered(10**6, 0) and DeliveryMarks().records_delivered(
        "7", 10**6, 0)
