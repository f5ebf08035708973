"""In-process test of delta coalescing.

The recorder below stands in for pygls' progress sender only to count notifications; the
real server's streaming is covered end to end in tests/e2e/test_generation.py.
"""

from __future__ import annotations

import asyncio

from lsp_server.features.progress import REPORT_INTERVAL, DeltaStream


class RecordingProgress:
    """Records begin/report/end instead of writing them to a client (a test recorder)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.tokens: dict = {}

    def begin(self, token, value):
        self.events.append(("begin", value))

    def report(self, token, value):
        self.events.append(("report", value.message))

    def end(self, token, value):
        self.events.append(("end", value.message))


class RecordingServer:
    def __init__(self) -> None:
        self.work_done_progress = RecordingProgress()


async def test_fast_tokens_are_coalesced_and_add_up():
    server = RecordingServer()
    stream = DeltaStream(server, "t", "Explain")
    stream.begin()
    pieces = [f"tok{i} " for i in range(200)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for piece in pieces:  # ~1000 tokens a second
        stream.delta(piece)
        await asyncio.sleep(0.001)
    elapsed = loop.time() - started
    stream.end("Done")
    reports = [m for kind, m in server.work_done_progress.events if kind == "report"]
    assert "".join(reports) == "".join(pieces) == stream.sent
    assert len(reports) <= elapsed / REPORT_INTERVAL + 2
    assert len(reports) >= 2
    assert server.work_done_progress.events[-1] == ("end", "Done")


async def test_a_pending_delta_is_flushed_by_the_timer():
    server = RecordingServer()
    stream = DeltaStream(server, "t", "Chat")
    stream.delta("a")
    stream.delta("b")  # inside the interval: waits for the timer
    assert [m for k, m in server.work_done_progress.events if k == "report"] == ["a"]
    await asyncio.sleep(REPORT_INTERVAL * 2)
    assert [m for k, m in server.work_done_progress.events if k == "report"] == ["a", "b"]


async def test_without_a_token_nothing_is_sent_but_the_text_is_kept():
    server = RecordingServer()
    stream = DeltaStream(server, None, "Chat")
    stream.begin()
    stream.delta("hello")
    stream.end("Done")
    assert server.work_done_progress.events == [] and stream.sent == "hello"
