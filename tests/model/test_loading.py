"""Model specs: default, folder, .gguf, HF id from a local cache, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.runtime.loading import load_model, local_folder
from model.runtime.spec import ModelSpec, ModelSpecError


def test_gguf_is_converted_once_into_the_cache(loaded, monkeypatch):
    import model.runtime.loading
    from model.runtime.paths import cache_dir

    folder = local_folder("default")  # converted by now (the `loaded` fixture)
    assert Path(folder).is_relative_to(cache_dir())
    files = {p.name: p.stat().st_mtime_ns for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    # Asked again, the cache answers: no second conversion, no file rewritten.
    conversions = []
    monkeypatch.setattr(model.runtime.loading, "_convert_gguf", lambda *a: conversions.append(a))
    for _ in range(2):
        assert local_folder("default") == folder
    assert conversions == []
    assert {p.name: p.stat().st_mtime_ns for p in Path(folder).iterdir()} == files
    assert loaded.context_window == 8192 and loaded.device == "cpu"
    assert loaded.runner_kind == "lean" and loaded.quantize == "none"


def test_runner_choice_and_refusals(tmp_path):
    assert ModelSpec.parse("default@int4").kind == "gguf"
    with pytest.raises(ModelSpecError, match="Unknown runner"):
        load_model("default", runner="onnx")
    with pytest.raises(ModelSpecError, match="Unknown quantize mode"):
        load_model("default", quantize="int3")
    # A model our own runner does not know falls back to transformers, and refuses int4.
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = local_folder("default")
    tiny = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=49152, n_positions=64)).save_pretrained(tiny)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tiny / name).write_bytes((Path(folder) / name).read_bytes())
    lm = load_model(str(tiny))
    assert lm.runner_kind == "transformers" and lm.context_window == 64
    with pytest.raises(ModelSpecError, match="not a plain Llama model"):
        load_model(str(tiny) + "@int4")


def test_folder_and_hub_id_from_a_local_cache(tmp_path, monkeypatch):
    folder = local_folder("default")
    assert ModelSpec.parse(folder).kind == "folder"
    # A Hugging Face cache laid out by hand: the real hub code path, no network.
    snap = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in Path(folder).iterdir():
        os.symlink(f, snap / f.name)
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("acme/tiny-chat")
    assert lm.name == "acme/tiny-chat" and lm.model.config.vocab_size == 49152
    with pytest.raises(ModelSpecError, match="not in the local Hugging Face cache"):
        load_model("acme/absent-model")


def test_default_model_loads_without_transformers(loaded):
    """The worker's start-up cost: our runner, tokenizer and sampler never import transformers.
    (A fresh interpreter is the point, so it pays one model load of its own: what a worker's
    process imports, whatever the tests imported before.)"""
    import subprocess
    import sys

    code = ("import sys; from model.runtime.loading import load_model; from model.runtime.engine import Engine; "
            "e = Engine(load_model('default')); "
            "print(''.join(e.generate([{'role': 'user', 'content': 'Hi'}], {'max_new_tokens': 4, 'temperature': 0.5, 'seed': 1}))); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "False" and lines[0].strip()


def test_llama_with_a_model_specific_tokenizer_class_keeps_our_runner(tmp_path):
    """Only the tokenizer falls back to transformers when it is not a plain tokenizer.json."""
    import json

    folder = local_folder("default")
    for f in Path(folder).iterdir():
        if f.name != "tokenizer_config.json":
            os.symlink(f, tmp_path / f.name)
    config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    lm = load_model(str(tmp_path))
    assert lm.runner_kind == "lean" and type(lm.tokenizer).__name__ != "LiteTokenizer"
    assert lm.tokenizer.decode(lm.tokenizer("def f(): pass")["input_ids"]) == "def f(): pass"
