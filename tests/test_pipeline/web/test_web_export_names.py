"""`/api/export` of an MQTT server (docs/behaviour.md §5.3 decision 3): its data documents are the
zip's members `<uid>_MQTT_<window end UTC>_<k>.json`, at the zip's root."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

from peers import free_ports
from web_support import UID, running_gateway

LIMIT_S = 40.0


def test_an_mqtt_servers_export_names_its_documents_without_a_leading_slash(
        tmp_path: Path) -> None:
    """The members were named `/<name>`: absolute paths, which unzip strips with a warning
    and other tools refuse or write at the root of the disk."""
    unreachable = {"SERVER2_Type": "mqtt", "MQTT2_Host": "127.0.0.1",
                   "MQTT2_Port": str(free_ports(1)[0]), "MQTT2_TopicData": f"sunpm/{UID}/data"}
    with running_gateway(tmp_path, inverters=1, extra=unreachable) as gateway, \
            gateway.client() as client:
        assert gateway.gateway is not None
        deadline = time.monotonic() + LIMIT_S
        while gateway.gateway.acknowledged_end("1") is None:
            assert time.monotonic() < deadline, "no record of the inverter stored"
            time.sleep(0.2)
        now = time.time()
        answer = client.get("/api/export", params={
            "server": 2, "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600)),
            "to": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 120))})
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = archive.namelist()
    assert names, names
    assert all(n.startswith(f"{UID}_MQTT_") and n.endswith(".json") for n in names), names
