"""MQTT data, alarm and result JSON (docs/formats.md §14.2-§14.4), and payload splitting."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pyarrow as pa
import pytest
from _views_site import (
    DEFINITIONS,
    DEVICES,
    INV,
    METER,
    Cell,
    Golden,
    config,
    definition,
    journal,
    ns,
    records,
    window_records,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.views.context import ViewError
from exporters.views.mqtt import (
    alarm_message,
    data_documents,
    record_keys,
    result_message,
    split_documents,
)
from exporters.views.names import NS_PER_S, WindowBounds, select_records
from store.events import (
    Channel,
    CommandResult,
    DeviceAlarm,
    GatewayAlarm,
    Source,
    Watermark,
    journal_items,
)


def _window_ending_0855() -> dict[str, pa.Table]:
    bounds = WindowBounds(end_ns=ns("2021-02-05 08:55:00"),
                          watermark=Watermark(devices={"1": 9, "2": 9, "IO": 9, "TIC1": 9}))
    return {k: select_records(t, k, bounds) for k, t in window_records().items()}


def test_data_json_of_the_spec_example(golden: Golden) -> None:
    documents = data_documents(_window_ending_0855(), DEFINITIONS, config())
    assert len(documents) == 1
    golden("mqtt_data_210205_085500.json", documents[0])


def test_failed_record_has_null_values(golden: Golden) -> None:
    documents = data_documents({"1": window_records()["1"]}, DEFINITIONS, config())
    records_ = json.loads(documents[0])["inv_a"]
    golden("mqtt_data_failed_record.json",
           json.dumps(records_[1], separators=(",", ":")))


def test_a_device_in_no_configuration_is_named_by_its_index() -> None:
    documents = data_documents({"1": window_records()["1"]}, DEFINITIONS, config(devices=()))
    assert list(json.loads(documents[0])) == ["1"]


def test_mqtt_dates_ignore_the_euro_format() -> None:
    documents = data_documents(_window_ending_0855(), DEFINITIONS, config(euro_date_format=True))
    assert json.loads(documents[0])["Io"][0]["date"] == "21/02/05-09:50:00"


def test_duplicate_keys_get_the_index() -> None:
    text = ("modbusTCP;X;Y;Z\n1;3;0;U16;;date;;1;0;;4\n2;3;1;U16;;P;;1;0;;4\n"
            "3;3;2;U16;;P;;1;0;;2\n4;3;3;U16;;P_min;;1;0;;4\n5;3;4;U16;;timestamp;;1;0;;2\n")
    # The parser keys the repeated Name `P` as `P_3` (docs/formats.md §8.1).
    keys = [k for _, ks in record_keys(definition(text, "d.csv", warnings=1)) for k in ks]
    assert keys == ["date_1", "P", "P_3_min", "P_3_max", "P_3_mean", "P_min",
                    "timestamp_5_min", "timestamp_5_max", "timestamp_5_mean"]


def test_action_2_key_whose_suffixed_key_repeats_an_earlier_key_gets_the_index() -> None:
    text = "modbusTCP;X;Y;Z\n1;3;0;U16;;E_max;;1;0;;4\n2;3;1;U16;;E;;1;0;;2\n"
    keys = [k for _, ks in record_keys(definition(text, "e.csv")) for k in ks]
    assert keys == ["E_max", "E_2_min", "E_2_max", "E_2_mean"]


def test_text_values_are_strings_and_tic_digits_numbers() -> None:
    table = records(INV, [("2021-02-05 08:50:00", {1: "A\"C;ME", 2: 1})])
    inv_text = INV.variables[0]
    assert inv_text.action.value == 1  # a parameter: never in data JSON
    doc = json.loads(data_documents({"1": table}, DEFINITIONS, config())[0])
    assert "1_Mn" not in doc["inv_a"][0]
    tic = json.loads(data_documents({"TIC1": window_records()["TIC1"]}, DEFINITIONS,
                                    config())[0])["Linky"]
    assert [r["BASE"] for r in tic] == [12345678, 12345838, 12346020]
    assert tic[0]["PTEC"] == "TH.."


def _many_records(count: int) -> pa.Table:
    start = ns("2021-02-05 00:00:00")
    rows: list[tuple[str, dict[int, Cell]]] = []
    for k in range(count):
        when = start + k * 600 * NS_PER_S
        rows.append(((f"2021-02-05 {when // NS_PER_S % 86400 // 3600:02d}:"
                     f"{when // NS_PER_S % 3600 // 60:02d}:00"),
                     {1: 2300 + k, 2: (-1, 1, 0.5), 3: k * 1000}))
    return records(METER, rows)


def test_split_at_max_payload_keeps_order_and_every_record() -> None:
    table = _many_records(40)
    whole = data_documents({"2": table}, DEFINITIONS, config(max_payload_kb=1024))
    assert len(whole) == 1
    parts = data_documents({"2": table, "1": window_records()["1"]}, DEFINITIONS,
                           config(max_payload_kb=1))
    assert len(parts) > 2
    assert all(len(p) <= 1024 for p in parts)
    flat = [(dev, rec) for p in parts for dev, recs in json.loads(p).items() for rec in recs]
    assert [dev for dev, _ in flat] == ["inv_a"] * 3 + ["meter_1"] * 40
    assert [rec["timestamp"] for _, rec in flat if _ == "meter_1"] == \
        sorted(rec["timestamp"] for _, rec in flat if _ == "meter_1")


names = st.sampled_from(['"a"', '"b"', '"ç"'])
record_bodies = st.text(alphabet="xyzé€", min_size=0, max_size=60).map(lambda s: "{" + s + "}")


def _parse(document: str) -> list[tuple[str, str]]:
    """(device key, record) pairs of a document whose records hold no brackets or quotes."""
    pairs: list[tuple[str, str]] = []
    inner = document[1:-1]
    while inner:
        name, _, rest = inner.partition(":[")
        body, _, inner = rest.partition("]")
        inner = inner.removeprefix(",")
        pairs += [(name, "{" + rec.strip("{}") + "}") for rec in body.split("},{")]
    return pairs


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(names, record_bodies), max_size=40),
       limit=st.integers(min_value=8, max_value=300))
def test_split_property(items: list[tuple[str, str]], limit: int) -> None:
    items = sorted(items, key=lambda i: i[0])  # document order groups a device's records
    documents = split_documents(items, limit)
    parsed = [_parse(doc) for doc in documents]
    for doc, pairs in zip(documents, parsed, strict=True):
        # Every part is within the limit, except a lone oversized record.
        assert len(doc.encode()) <= limit or len(pairs) == 1
    assert [pair for pairs in parsed for pair in pairs] == items
    # Greedy: no document could also have taken the next document's first record.
    for pairs, following in itertools.pairwise(parsed):
        grown = split_documents([*pairs, following[0]], 1 << 30)[0]
        assert len(grown.encode()) > limit


def test_greedy_split_fills_each_document() -> None:
    items = [('"d"', "{" + "x" * 10 + "}")] * 5   # each record 12 bytes
    # {"d":[r]} = 8 + 12 = 20 bytes; each further record adds 13.
    assert [len(d) for d in split_documents(items, 46)] == [46, 33]
    assert [len(d) for d in split_documents(items, 45)] == [33, 33, 20]
    assert [len(d) for d in split_documents(items, 19)] == [20] * 5


def test_alarm_json_of_the_spec_examples(golden: Golden) -> None:
    sunspec = definition("modbusTCP;Inverter;SMA;Solar_Inverter\n3;3;40;U16;;St;;1;0;;8\n",
                         "WPM00C44F_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv")
    rows = [
        ("2021-02-05 08:50:00", "alarm", "3", sunspec.snapshot_id,
         DeviceAlarm(source=Source.MODBUS, name="modbusTCP", var=3, value="106").to_body()),
        ("2021-02-05 08:50:00", "alarm", None, None,
         GatewayAlarm(alarm="Power OFF").to_body()),
        ("2021-02-12 06:09:00", "alarm", None, None,
         GatewayAlarm(alarm="Storage full", subject="inv_a").to_body()),
    ]
    items = journal_items(journal(rows))
    definitions = {sunspec.snapshot_id: sunspec}
    golden("mqtt_alarm_device.json", alarm_message(items[0], definitions, config()))
    golden("mqtt_alarm_gateway.json", alarm_message(items[1], definitions, config()))
    golden("mqtt_alarm_extension.json", alarm_message(items[2], definitions, config()))


def test_alarm_json_value_is_scaled() -> None:
    rows = [("2021-02-05 08:50:00", "alarm", "2", METER.snapshot_id,
             DeviceAlarm(source=Source.MODBUS, name="meter_1", var=1, value="2305").to_body())]
    message = json.loads(alarm_message(journal_items(journal(rows))[0], DEFINITIONS, config()))
    assert message["alarms"][0]["value"] == "230.5"


def test_alarm_json_of_an_unknown_variable_is_a_view_error() -> None:
    rows = [("2021-02-05 08:50:00", "alarm", "2", METER.snapshot_id,
             DeviceAlarm(source=Source.MODBUS, name="meter_1", var=99, value="1").to_body())]
    with pytest.raises(ViewError, match=re.escape("Index 99 is not in meter_small.csv")):
        alarm_message(journal_items(journal(rows))[0], DEFINITIONS, config())


def test_result_json_of_the_spec_example(golden: Golden) -> None:
    result = CommandResult(channel=Channel.MQTT, caller_id="3d9311ed-0076-4f28-ac59-a2debfa35b86",
                           rpc_name="test.testFunction", result={"value": 42})
    golden("mqtt_result.json", result_message(result))


def test_result_json_writes_a_scripts_float_results_in_plain_notation() -> None:
    result = CommandResult(channel=Channel.MQTT, caller_id=9, rpc_name="calc.run",
                           result=[1e20, 1.0, 1e-7, {"x": -0.0}])
    assert result_message(result) == \
        b'[{"result":[100000000000000000000,1,0.0000001,{"x":0}],"callerId":9}]'


def test_a_removed_devices_name_taken_by_another_device_gets_its_index() -> None:
    # Device 1 (inv_a) left the configuration with records still to send; device 2 took its
    # name. The document keeps one array per device.
    gone = dataclasses.replace(DEVICES[2], name="inv_a")
    now = dataclasses.replace(DEVICES[3], name="inv_a")
    cfg = config(devices=(now,), former_device=lambda index: gone if index == "1" else None)
    window = window_records()
    [doc] = data_documents({"1": window["1"], "2": window["2"]}, DEFINITIONS, cfg)
    assert list(json.loads(doc)) == ["inv_a", "inv_a_2"]
