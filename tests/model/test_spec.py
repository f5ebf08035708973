"""Model specs parsed once into ``ModelSpec``: every form, relative paths, adapters, and
one sentence for each bad spec."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.runtime.spec import ADAPTER_FILE, ModelSpec, ModelSpecError, default_gguf_path
from model.serving import protocol


def write_adapter(path: Path, arch: str = "llama", n_embd: int = 64, layers: int = 2, rank: int = 4,
                  general_type: str = "adapter", tensor: str = "attn_q", completion_scale: object = None) -> Path:
    """A LoRA adapter GGUF in llama.cpp's format (random A/B for ``tensor`` of each layer);
    ``completion_scale``: the completion scale it carries (a float, or a string as a damaged
    file would have it)."""
    import gguf

    from model.runtime.spec import COMPLETION_SCALE_KEY

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", general_type)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    if isinstance(completion_scale, str):
        writer.add_string(COMPLETION_SCALE_KEY, completion_scale)
    elif completion_scale is not None:
        writer.add_float32(COMPLETION_SCALE_KEY, float(completion_scale))
    rng = np.random.default_rng(0)
    for layer in range(layers):
        name = f"blk.{layer}.{tensor}.weight"
        writer.add_tensor(name + ".lora_a", rng.standard_normal((rank, n_embd)).astype(np.float32))
        writer.add_tensor(name + ".lora_b", rng.standard_normal((n_embd, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_base(tiny_models) -> Path:
    return tiny_models.gguf("llama", "Q8_0")


def test_default_and_its_canonical_form():
    spec = ModelSpec.parse("default")
    assert spec.is_default and spec.kind == "gguf" and Path(spec.location) == default_gguf_path()
    assert str(spec) == "default" and spec.engine() == "llama.cpp"
    assert ModelSpec.parse(" default@int4 ").quantize == "int4"
    assert str(ModelSpec.parse("default@int4")) == "default@int4"
    assert ModelSpec.parse(spec) is spec  # a parsed spec passes through unchanged


def test_relative_paths_mean_one_model_wherever_they_travel(tmp_path, tiny_base):
    """Two projects' ``./model.gguf`` are two models, with two workers; the canonical form is
    absolute (and a link to the same file is the same model)."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copy(tiny_base, d / "model.gguf")
    os.symlink(a / "model.gguf", tmp_path / "link.gguf")
    assert ModelSpec.parse("link.gguf", tmp_path) == ModelSpec.parse("a/model.gguf", tmp_path)
    spec_a, spec_b = ModelSpec.parse("./model.gguf", a), ModelSpec.parse("model.gguf", b)
    assert spec_a.location == str((a / "model.gguf").resolve())
    assert Path(str(spec_a)).is_absolute()
    assert spec_a.key() != spec_b.key()
    assert protocol.socket_path_for(spec_a) != protocol.socket_path_for(spec_b)
    # the canonical text parses back to the same value from anywhere
    assert ModelSpec.parse(str(spec_a), tmp_path / "elsewhere") == spec_a


def test_a_folder_with_plus_in_its_name_is_a_folder(tmp_path):
    folder = tmp_path / "c++model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    spec = ModelSpec.parse(str(folder))
    assert spec.kind == "folder" and spec.adapter is None


def test_base_plus_adapter_folder(tmp_path, tiny_base):
    run = tmp_path / "runs" / "myrepo"
    run.mkdir(parents=True)
    write_adapter(run / ADAPTER_FILE)
    spec = ModelSpec.parse(f"{tiny_base}+runs/myrepo", tmp_path)
    assert spec.adapter == str((run / ADAPTER_FILE).resolve()) and spec.base.adapter is None
    assert spec.engine() == "llama.cpp" and "myrepo" in spec.display_name
    assert ModelSpec.parse(str(spec)) == spec
    # a new adapter written in its place (adapt replaces it by rename) gets a fresh worker
    key = spec.key()
    write_adapter(run / "new.gguf", rank=8)
    os.replace(run / "new.gguf", run / ADAPTER_FILE)
    assert spec.key() != key
    # the adapter .gguf file itself works too
    assert ModelSpec.parse(f"{tiny_base}+{run / ADAPTER_FILE}").adapter == spec.adapter


@pytest.mark.parametrize("make,message", [
    (lambda d: write_adapter(d / ADAPTER_FILE, arch="qwen2"), "qwen2 architecture"),
    (lambda d: write_adapter(d / ADAPTER_FILE, n_embd=128), "another size"),
    (lambda d: write_adapter(d / ADAPTER_FILE, layers=5), "does not have"),
    (lambda d: write_adapter(d / ADAPTER_FILE, general_type="model"), "not a LoRA adapter"),
    # the completion scale it carries must be one (a hostile file may say anything there)
    (lambda d: write_adapter(d / ADAPTER_FILE, completion_scale="high"), "damaged starchat.adapter.completion_scale"),
    (lambda d: write_adapter(d / ADAPTER_FILE, completion_scale=9.0), "adapter_scale must be a number from 0"),
    (lambda d: write_adapter(d / ADAPTER_FILE, completion_scale=float("nan")), "damaged starchat.adapter"),
    (lambda d: (d / ADAPTER_FILE).write_bytes(b"not a gguf"), "not a GGUF file"),
    (lambda d: (d / "adapter_config.json").write_text("{}"), "peft adapter but no adapter.gguf"),
    (lambda d: None, "holds no adapter.gguf"),
])
def test_an_adapter_for_another_base_is_refused(tmp_path, tiny_base, make, message):
    run = tmp_path / "run"
    run.mkdir()
    make(run)
    with pytest.raises(ModelSpecError, match=message):
        ModelSpec.parse(f"{tiny_base}+{run}")


@pytest.mark.parametrize("spec,message", [
    ("", "empty"),
    ("no such thing", "Unknown model spec"),
    ("./missing-folder", "does not exist"),
    ("/tmp/missing.gguf", "does not exist"),
    ("default+", "BASE\\+ADAPTER"),
    ("default+/no/such/adapter", "does not exist"),
])
def test_bad_specs_are_one_sentence(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        ModelSpec.parse(spec)


def test_adapters_need_a_gguf_base_and_no_int4(tmp_path, tiny_models):
    run = tmp_path / "run"
    run.mkdir()
    write_adapter(run / ADAPTER_FILE)
    folder = tiny_models.folder("llama")
    with pytest.raises(ModelSpecError, match="export it with `starchat export-gguf`"):
        ModelSpec.parse(f"{folder}+{run}")
    with pytest.raises(ModelSpecError, match="not on the @int4 runner"):
        ModelSpec.parse(f"default+{run}@int4")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="config.json"):
        ModelSpec.parse(str(tmp_path))
