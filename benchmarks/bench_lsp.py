"""Language-server figures, printed as one JSON object.

- initialize: spawn of `starchat lsp` -> InitializeResult (cold: includes Python start and
  imports; median of 3 spawns, ``initialize_cold_s_median``) and the request alone once the
  process reads (warm);
- textDocument/codeAction p50/p99 while an explain is streaming;
- time to first token through LSP (executeCommand -> first $/progress delta) vs the engine
  directly on the same messages in this process.

Runs against the real `starchat lsp` subprocess, a private worker and the embedded model.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import stop_workers  # noqa: E402
from lsp_server import commands  # noqa: E402

SAMPLE = ROOT / "lsp_server" / "samples" / "buggy_stats.py"
COMMAND = [sys.executable, "-m", "lsp_server", "lsp"]
QUESTION = "Write a Python function that reverses a string."
RUNS = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Client:
    def __init__(self) -> None:
        self.lsp = LanguageClient("bench", "0")
        self.first_delta: dict[str, float] = {}
        self.lsp.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(lambda p: None)
        self.lsp.feature(types.PROGRESS)(lambda params: self.on_progress(params))

    def on_progress(self, params: types.ProgressParams) -> None:
        value = params.value if isinstance(params.value, dict) else {}
        if value.get("kind") == "report" and value.get("message"):
            self.first_delta.setdefault(str(params.token), time.perf_counter())

    async def start(self, settings: dict) -> dict:
        spawned = time.perf_counter()
        await self.lsp.start_io(*COMMAND)
        await self.lsp.initialize_async(self._params(settings))
        cold = time.perf_counter() - spawned
        self.lsp.initialized(types.InitializedParams())
        return {"cold_s": cold}

    @staticmethod
    def _params(settings: dict) -> types.InitializeParams:
        return types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True)
            ),
            root_uri=ROOT.as_uri(),
            initialization_options={"starchat": settings},
        )

    async def execute(self, command: str, argument: dict, token: str) -> dict:
        return await self.lsp.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command, arguments=[argument], work_done_token=token)
        )

    async def stop(self) -> None:
        await self.lsp.shutdown_async(None)
        self.lsp.exit(None)
        await self.lsp.stop()


async def warm_initialize() -> float:
    """Spawn, wait until the process reads (an unknown method's error), time initialize."""
    client = Client()
    await client.lsp.start_io(*COMMAND)
    try:
        await client.lsp.protocol.send_request_async("starchat/notAMethod", {})
    except Exception:  # the expected MethodNotFound: the process is up and reading
        pass
    started = time.perf_counter()
    await client.lsp.initialize_async(Client._params({}))
    elapsed = time.perf_counter() - started
    await client.stop()
    return elapsed


async def cold_initialize() -> float:
    """Spawn of `starchat lsp` -> its InitializeResult (Python start and imports included)."""
    client = Client()
    cold = (await client.start({}))["cold_s"]
    await client.stop()
    return cold


async def lsp_figures() -> dict:
    result: dict = {}
    warm = [await warm_initialize() for _ in range(3)]
    result["initialize_warm_s_median"] = statistics.median(warm)
    cold = [await cold_initialize() for _ in range(3)]
    result["initialize_cold_s_median"] = statistics.median(cold)
    result["initialize_cold_s_runs"] = cold

    client = Client()
    await client.start({"generation": {"max_new_tokens": 8}})
    uri = SAMPLE.as_uri()
    client.lsp.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=SAMPLE.read_text()
            )
        )
    )
    # Wait for the model (the first request waits for the warm-up).
    await client.execute(commands.CHAT, {"message": "Say OK."}, "warmup")

    ttft = []
    for i in range(RUNS):
        token = f"ttft-{i}"
        sent = time.perf_counter()
        await client.execute(commands.CHAT, {"message": QUESTION}, token)
        ttft.append(client.first_delta[token] - sent)
    result["ttft_lsp_s_median"] = statistics.median(ttft)

    # codeAction latency while an explain streams 64 tokens.
    client.lsp.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"starchat": {"generation": {"max_new_tokens": 64}}}
        )
    )
    selection = {"start": {"line": 3, "character": 0}, "end": {"line": 9, "character": 0}}
    explain = asyncio.ensure_future(
        client.execute(commands.EXPLAIN, {"textDocument": {"uri": uri}, "range": selection}, "ex")
    )
    while "ex" not in client.first_delta:
        await asyncio.sleep(0.01)
    latencies = []
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(3, 0), end=types.Position(9, 0)),
        context=types.CodeActionContext(diagnostics=[]),
    )
    while not explain.done() and len(latencies) < 300:
        started = time.perf_counter()
        await client.lsp.text_document_code_action_async(params)
        latencies.append(time.perf_counter() - started)
    await explain
    result["code_action_during_stream"] = {
        "n": len(latencies),
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }
    await client.stop()
    return result


def worker_ttft() -> float:
    """The same request through the worker client without LSP (isolates the LSP layer)."""
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.serving.client import WorkerClient

    request = {
        "system": DEFAULT_SYSTEM_PROMPT,
        "history": [],
        "user_parts": [{"kind": "text", "text": QUESTION}],
        "params": {"max_new_tokens": 8},
    }
    values = []
    with WorkerClient("default") as worker:
        for _ in range(RUNS):
            sent = time.perf_counter()
            first = None
            for event in worker.generate(request):
                if event.get("type") == "delta" and first is None:
                    first = time.perf_counter() - sent
            values.append(first)
    return statistics.median(values)


def engine_ttft() -> float:
    """The same messages straight through the engine in this process."""
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.runtime.engine import Engine, GenerationParams
    from model.runtime.loading import load_model

    engine = Engine(load_model("default"))
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": QUESTION},
    ]
    params = GenerationParams(max_new_tokens=8)  # TTFT needs only the first tokens
    list(engine.generate(messages, params))  # warm-up
    values = []
    for _ in range(RUNS):
        stream = engine.generate(messages, params)
        for _text in stream:
            pass
        values.append(stream.usage["ttft_s"])
    return statistics.median(values)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="starchat-bench-"))
    os.environ["STARCHAT_RUNTIME_DIR"] = str(tmp / "run")
    os.environ["STARCHAT_DATA_DIR"] = str(tmp / "data")
    try:
        figures = asyncio.run(lsp_figures())
        figures["ttft_worker_client_s_median"] = worker_ttft()
        figures["ttft_engine_s_median"] = engine_ttft()
    finally:  # nothing of the benchmark's may outlive it: worker, sockets, conversations
        stop_workers(tmp / "run")
        shutil.rmtree(tmp, ignore_errors=True)
    figures["ttft_lsp_over_engine"] = figures["ttft_lsp_s_median"] / figures["ttft_engine_s_median"]
    figures["cpu_count"] = os.cpu_count()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
