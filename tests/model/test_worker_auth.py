"""The worker's TCP handshake: the shared secret is compared as bytes, whatever text a client
sends, and a wrong one ends the connection with an error frame (the model is never loaded)."""

from __future__ import annotations

import asyncio

import pytest

from model.runtime.spec import ModelSpec
from model.serving import protocol
from model.serving.scheduler import Scheduler
from model.serving.worker import WorkerServer

SECRET = "s\u00e9same-\u00f6ffne-dich-\u2603"


async def _hello(secret) -> list[dict]:
    server = WorkerServer(Scheduler(ModelSpec.default()), secret=SECRET, idle_timeout=60)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(protocol.pack({"type": "hello", "secret": secret}))
        writer.write(protocol.pack({"type": "info", "id": 1}))
        await writer.drain()
        frames = []
        while (frame := await asyncio.wait_for(protocol.read_frame(reader), 10)) is not None:
            frames.append(frame)
            if frame["type"] == "info":
                break
        writer.close()
        return frames
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize("wrong", ["sésame", "\u2603" * 40, "", "plain-ascii", 12, None])
def test_a_wrong_secret_of_any_kind_is_an_authentication_error(wrong):
    frames = asyncio.run(_hello(wrong))
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["message"].startswith("Authentication failed")


def test_the_right_non_ascii_secret_is_accepted():
    frames = asyncio.run(_hello(SECRET))
    assert [f["type"] for f in frames] == ["hello", "info"]
    assert frames[1]["ready"] is False  # nothing was loaded


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.5", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert protocol.is_loopback(host) is loopback
