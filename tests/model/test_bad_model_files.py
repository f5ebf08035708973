"""Model files that lie: each answers in one sentence naming the file and the problem, through
`starchat ask` as a user meets it, and no worker is left behind.

The GGUF files are the embedded model or a tiny one, damaged here; the folders are a tiny
random model (tests/tiny_models.py) with one file removed or broken.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.runtime.gguf_meta import read_metadata
from model.runtime.llamacpp_errors import classify
from model.runtime.model_files import ModelFileError, check_folder
from model.runtime.spec import default_gguf_path
from tests.cleanup import is_alive


def _gguf_cases(tmp: Path, tiny_models) -> dict[str, tuple[Path, str]]:
    data = default_gguf_path().read_bytes()
    cases: dict[str, bytes] = {
        "zero-byte": b"",
        "wrong-magic": b"GGML" + data[4:4096],
        "text": b"this is not a model\n",
        "cut-in-header": data[:1000],
        "truncated": data[: len(data) // 2],
        # the first key's value type (after magic, version, counts, key length and key) made 99
        "corrupt-header": _patch_first_type(data[:65536], 99),
        "huge-key-count": data[:8] + data[8:16] + struct.pack("<Q", 1 << 40) + data[24:4096],
        "huge-array": _huge_array(data),
    }
    at = data.index(b"llama", data.index(b"general.architecture"))
    cases["unknown-arch"] = data[:at] + b"zzzzz" + data[at + 5:]
    expected = {
        "zero-byte": "zero-byte.gguf is empty (0 bytes)",
        "wrong-magic": "wrong-magic.gguf is not a GGUF file",
        "text": "text.gguf is not a GGUF file",
        "cut-in-header": "cut-in-header.gguf is truncated: it ends inside its header",
        "truncated": "truncated.gguf is truncated or damaged: tensor",
        "corrupt-header": "corrupt-header.gguf has a damaged header: a value of unknown type 99",
        "huge-key-count": "huge-key-count.gguf has a damaged header: it declares 1099511627776 metadata keys",
        "huge-array": "huge-array.gguf has a damaged header: an array of 4611686018427387904 items",
        "unknown-arch": "its architecture 'zzzzz' is not supported",
    }
    out = {}
    for name, body in cases.items():
        (tmp / f"{name}.gguf").write_bytes(body)
        out[name] = (tmp / f"{name}.gguf", expected[name])
    vocab = tiny_models.root / "vocabulary-mismatch.gguf"
    if not vocab.exists():
        from tests.tiny_models import tiny_gguf

        tiny_gguf("llama", vocab, extra_tokens=8)
    out["vocabulary-mismatch"] = (vocab, "vocabulary-mismatch.gguf does not match itself (its vocabulary")
    return out


def _patch_first_type(header: bytes, kind: int) -> bytes:
    (key_len,) = struct.unpack("<Q", header[24:32])
    at = 32 + key_len
    return header[:at] + struct.pack("<I", kind) + header[at + 4:]


def _huge_array(data: bytes) -> bytes:
    """The vocabulary array's item count set to 2**62 (its type and the rest unchanged)."""
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 4 + 4  # past the key, the value type (array), the item type
    return data[:at] + struct.pack("<Q", 1 << 62) + data[at + 8: at + 4096]


FOLDER_CASES = {
    "no-config": (lambda f: (f / "config.json").unlink(), "holds no config.json"),
    "config-not-json": (lambda f: (f / "config.json").write_text("{'model_type': llama"),
                        "config.json is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    "config-empty": (lambda f: (f / "config.json").write_text(""), "config.json is empty"),
    "config-a-list": (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json names no model_type"),
    "no-tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer (tokenizer.json"),
    "tokenizer-not-json": (lambda f: (f / "tokenizer.json").write_text('{"model": '),
                           "tokenizer.json is not valid JSON (Expecting value at line 1, column 11)"),
    "tokenizer-config-not-json": (lambda f: (f / "tokenizer_config.json").write_bytes(b"\xff\xfe{"),
                                  "tokenizer_config.json is not UTF-8 text"),
    "weights-truncated": (lambda f: _truncate(f / "model.safetensors"), "model.safetensors is truncated: its tensors need"),
    "weights-header-cut": (lambda f: _truncate(f / "model.safetensors", 100), "model.safetensors is truncated or not safetensors"),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), "has no weights (*.safetensors or pytorch_model.bin)"),
}


def _truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: size if size is not None else len(data) - 1000])


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from tests.model.conftest import kill_workers

    root = tmp_path_factory.mktemp("bad-files-rt")
    yield root
    kill_workers(root)


def _ask(model: Path, runtime: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime))
    return subprocess.run([sys.executable, "-m", "lsp_server", "ask", "hi", "--model", str(model),
                           "--max-new-tokens", "4"], capture_output=True, text=True, timeout=240, env=env)


def _one_sentence(result: subprocess.CompletedProcess, words: str) -> str:
    assert result.returncode != 0 and result.stdout.strip() == "", result
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[Loading model")]
    assert len(lines) == 1, result.stderr
    assert words in lines[0] and "Traceback" not in lines[0], lines[0]
    return lines[0]


def _worker_processes(runtime: Path) -> list[int]:
    """Live worker processes with a socket under ``runtime``, found in /proc (asking a worker
    would count as a client's activity and keep it alive)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "model.serving.worker" in command and str(runtime) in command and is_alive(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def _no_worker_left(runtime: Path, case: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _worker_processes(runtime) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _worker_processes(runtime)
    if left:  # the worker's log says why it stayed
        logs = " | ".join(p.read_text(errors="replace")[-1500:] for p in runtime.glob("*.log"))
        raise AssertionError(f"{case}: worker {left} still running; {logs}")


def test_bad_gguf_files_answer_in_one_sentence_with_no_worker_left(tmp_path, tiny_models, runtime):
    for name, (path, words) in _gguf_cases(tmp_path, tiny_models).items():
        start = time.monotonic()
        line = _one_sentence(_ask(path, runtime), words)
        assert path.name in line, (name, line)
        _no_worker_left(runtime, name)
        # (no speed is asserted; the time is in the failure message when one lingers)
        assert time.monotonic() - start < 240, name


def test_bad_model_folders_answer_in_one_sentence_with_no_worker_left(tmp_path, tiny_models, runtime):
    good = tiny_models.folder("llama")
    check_folder(good)  # the untouched folder passes
    for name, (damage, words) in FOLDER_CASES.items():
        folder = tmp_path / name
        shutil.copytree(good, folder)
        damage(folder)
        _one_sentence(_ask(folder, runtime), words)
        _no_worker_left(runtime, name)


@pytest.mark.parametrize("name", sorted(FOLDER_CASES))
def test_check_folder_names_the_file(tmp_path, tiny_models, name):
    damage, words = FOLDER_CASES[name]
    folder = tmp_path / name
    shutil.copytree(tiny_models.folder("llama"), folder)
    damage(folder)
    if name == "no-config":
        return  # ModelSpec.parse refuses it first (the folder is not a model folder)
    with pytest.raises(ModelFileError) as caught:
        check_folder(folder)
    assert words in str(caught.value) and str(folder) in str(caught.value)


def test_the_header_reader_refuses_huge_counts_at_once(tmp_path):
    data = default_gguf_path().read_bytes()
    (tmp_path / "h.gguf").write_bytes(_huge_array(data))
    start = time.monotonic()
    with pytest.raises(ValueError, match="an array of 4611686018427387904 items"):
        read_metadata(tmp_path / "h.gguf")
    assert time.monotonic() - start < 60  # not one read per declared item


# llama.cpp's own error lines (verbosity 1), as recorded from real failed loads here.
OOM_LOG = """\
0.03.220.845 E ggml_aligned_malloc: insufficient memory (attempted to allocate 2880.00 MB)
0.03.220.868 E ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 3019898880
0.03.221.003 E llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache
0.03.296.007 E srv          init: exiting due to model loading error
"""


def test_out_of_memory_is_reported_as_out_of_memory():
    message = classify(OOM_LOG, Path("/m/model.gguf"), "llama", 131072, 4)
    assert message.startswith("llama.cpp ran out of memory loading model.gguf (insufficient memory "
                              "(attempted to allocate 2880.00 MB)); a 131072-token window in 4 slots")
    assert "architecture" not in message


def test_out_of_memory_for_real_under_a_memory_limit(tmp_path):
    """The embedded model with its context length raised to 131,072 tokens, loaded where the
    address space cannot hold that KV cache (~3 GB): llama.cpp's load fails, and the sentence
    says memory (it said "architecture not supported" before)."""
    data = bytearray(default_gguf_path().read_bytes())
    key = b"llama.context_length"
    at = data.index(key) + len(key)
    assert struct.unpack("<I", data[at:at + 4])[0] == 4  # a uint32 follows
    data[at + 4:at + 8] = struct.pack("<I", 131072)
    (tmp_path / "long.gguf").write_bytes(bytes(data))
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))\n"
            "from model.runtime import llamacpp_engine\n"
            "try:\n"
            "    llamacpp_engine.load(sys.argv[1], threads=1, slots=1, max_context=131072)\n"
            "except ValueError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "long.gguf")], capture_output=True,
                            text=True, timeout=240, cwd=str(Path(__file__).resolve().parents[2]))
    assert result.stdout.startswith("llama.cpp ran out of memory loading long.gguf (insufficient memory"), result
    assert "131072-token window in 1 slots" in result.stdout
