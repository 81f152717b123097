"""The web UI's port: taken, `sunpm run` goes on without its web UI (logged); the demo takes a
free port instead and says where."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from web_support import write_site

from pipeline.service.gateway import Gateway
from pipeline.web import WebPlugin


async def _run_with(tmp_path: Path, plugin: WebPlugin) -> Gateway:
    write_site(tmp_path / "config", tmp_path / "server", [1])
    (tmp_path / "server").mkdir(exist_ok=True)
    return Gateway(tmp_path / "config", tmp_path / "data", plugins=[plugin])


@pytest.mark.parametrize("fallback", [False, True])
async def test_a_taken_port(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                            fallback: bool) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    announced: list[str] = []
    plugin = WebPlugin(port=port, free_port_fallback=fallback, announce=announced.append)
    gateway = await _run_with(tmp_path, plugin)
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="sunpm")
    task = asyncio.create_task(gateway.run(stop))
    try:
        async with asyncio.timeout(20):
            while gateway.poller is None or (fallback and plugin.url is None) or \
                    (not fallback and "Web UI not started" not in caplog.text):
                assert not task.done(), task
                await asyncio.sleep(0.05)
        if fallback:
            assert plugin.url is not None and f":{port}/" not in plugin.url
            assert f"Web UI on {plugin.url}" in announced
        else:
            assert plugin.url is None
            assert f"cannot listen on 127.0.0.1:{port}: Address already in use\n" in caplog.text
            assert not task.done()      # the gateway goes on polling
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task
        busy.close()
