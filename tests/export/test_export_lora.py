"""A peft LoRA adapter converted by ``training.export.export_lora`` runs on llama.cpp, loaded
at run time on top of the exported base file, as the merged model runs on torch.

For each architecture we train: a tiny random model folder (tests/tiny_models.py), a LoRA
on every linear layer (r=8, alpha=16) whose B starts random (peft starts it at zero, which
would change nothing), saved as peft saves it; the folder exported to an F32 GGUF, the
adapter to an F16 adapter GGUF for it; llama.cpp with both gives the greedy tokens of the
adapter merged into the model on torch (``merge_and_unload``) for 32 steps on a few
prompts, and not those of the model without it. rsLoRA with per-module ranks and alphas
(scalings llama.cpp's one formula has to be given) likewise. Then what llama.cpp cannot
apply, or what belongs to another model, is one sentence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.export.runs import check_greedy, eos_ids, gguf_fields, llama_cpp, torch_choices
from tests.tiny_models import ARCHS, tiny_config
from training.export import ExportError, export_lora

TEXTS = ("def fib(n):\n    return", "<|im_start|>user\nSort a list.<|im_end|>\n<|im_start|>assistant\n")
LORA = dict(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)


def make_adapter(model: Any, out: Path, seed: int = 7, **config: Any) -> Any:
    """A LoRA on ``model`` (changed in place) with random B, saved to ``out``; the peft model."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(**{**LORA, **config}))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(out)
    return peft_model


def _load(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def _check_adapter_on_llama_cpp(tiny_models, tmp_path: Path, arch: str, qtype: str, tolerance: float,
                                **config: Any) -> Path:
    from transformers import AutoTokenizer

    folder = tiny_models.folder(arch)
    base_gguf = tiny_models.gguf(arch, "F32")
    base = _load(folder)
    merged = make_adapter(_load(folder), tmp_path / "adapter", **config).merge_and_unload().eval()
    out = export_lora(tmp_path / "adapter", base_gguf, tmp_path / "adapter.gguf", qtype)
    assert out == tmp_path / "adapter.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stop = eos_ids(folder)
    with llama_cpp(base_gguf, adapters=[(out, 1.0)]) as server:
        for text in TEXTS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = check_greedy(merged, server, ids, stop, tolerance)
            without, _ = torch_choices(base, ids, got)
            assert without != got, text  # the adapter changes the answer
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_on_llama_cpp_answers_as_the_merged_model(arch, tiny_models, tmp_path):
    out = _check_adapter_on_llama_cpp(tiny_models, tmp_path, arch, "f16", 0.05)
    fields = gguf_fields(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 16.0
    types = fields["tensor_types"]
    per_layer = 7 if arch in ("llama", "qwen2") else 6 if arch == "starcoder2" else 4
    assert len(types) == 2 * 2 * per_layer  # an A and a B for every linear layer of both layers
    assert {t for n, t in types.items() if n.endswith(".lora_a")} == {"F16"}
    assert {t for n, t in types.items() if n.endswith(".lora_b")} == {"F16"}


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_on_the_top_layer_only(arch, tiny_models, tmp_path):
    """``lora_top_layers: 1`` (the CPU adapt recipe adapts the upper layers only): every linear
    module of the last layer gets an adapter, whatever the family names them, none below it;
    converted, llama.cpp answers as the merged model."""
    from transformers import AutoConfig

    from training.config import parse_config
    from training.train import lora_targets

    lora_args = parse_config(["--output_dir", str(tmp_path / "x"), "--use_lora", "true",
                              "--lora_top_layers", "1"])[2]
    config = AutoConfig.from_pretrained(tiny_models.folder(arch))
    targets = lora_targets(_load(tiny_models.folder(arch)), lora_args)
    assert targets["layers_to_transform"] == [config.get_text_config().num_hidden_layers - 1] == [1]
    out = _check_adapter_on_llama_cpp(tiny_models, tmp_path, arch, "f16", 0.05, **targets)
    names = gguf_fields(out)["tensor_types"]
    per_layer = 7 if arch in ("llama", "qwen2") else 6 if arch == "starcoder2" else 4
    assert len(names) == 2 * per_layer and all(name.startswith("blk.1.") for name in names), sorted(names)


def test_rslora_with_per_module_rank_and_alpha(tiny_models, tmp_path):
    """rsLoRA scales by alpha / sqrt(r), patterns give some modules their own r and alpha:
    folded into B, so llama.cpp's alpha / r gives peft's numbers (F32 adapter, tight tolerance)."""
    out = _check_adapter_on_llama_cpp(tiny_models, tmp_path, "llama", "f32", 5e-3, use_rslora=True,
                                      rank_pattern={"q_proj": 4}, alpha_pattern={"down_proj": 48})
    types = gguf_fields(out)["tensor_types"]
    assert set(types.values()) == {"F32"}


def test_strength_scales_the_change_merged_and_converted(tiny_models, tmp_path):
    """``set_strength`` (``starchat adapt --strength``): the merged model's weights are
    base + s x (trained - base) for every adapted weight, per-module alphas and rsLoRA
    included, and the adapter converted for llama.cpp carries the scaled alpha."""
    import torch
    from safetensors.torch import load_file

    from training.repo.fit import merge, set_strength

    folder = tiny_models.folder("llama")
    make_adapter(_load(folder), tmp_path / "adapter", use_rslora=True, alpha_pattern={"down_proj": 48})
    full = load_file(merge(str(folder), tmp_path / "adapter", tmp_path / "full") / "model.safetensors")
    set_strength(tmp_path / "adapter", 0.25)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 4.0 and config["alpha_pattern"] == {"down_proj": 12.0}
    part = load_file(merge(str(folder), tmp_path / "adapter", tmp_path / "part") / "model.safetensors")
    base = _load(folder).state_dict()
    changed = 0
    for name, weight in part.items():
        if not name.endswith("proj.weight"):
            assert torch.equal(weight, full[name]), name
            continue
        delta = full[name] - base[name]
        changed += bool(delta.abs().max() > 0)
        assert (weight - base[name] - 0.25 * delta).abs().max() <= 1e-5 * (1 + delta.abs().max()), name
    assert changed >= 14  # every linear layer of both layers (the llama has 7 per layer)
    out = export_lora(tmp_path / "adapter", tiny_models.gguf("llama", "F32"), tmp_path / "adapter.gguf")
    assert gguf_fields(out)["adapter.lora.alpha"] == 4.0


def test_q8_0_adapter_types_and_command_line(tiny_models, tmp_path, capsys):
    """``--type q8_0``: A's rows (the layer's input width, whole blocks) are Q8_0, B's (the
    rank, 8) are not whole blocks and stay F16."""
    from lsp_server.cli import main

    make_adapter(_load(tiny_models.folder("qwen2")), tmp_path / "adapter")
    capsys.readouterr()  # what importing peft printed
    out = tmp_path / "a.gguf"
    base = tiny_models.gguf("qwen2", "F32")
    assert main(["export-gguf", str(tmp_path / "adapter"), str(out), "--base", str(base), "--type", "q8_0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    types = gguf_fields(out)["tensor_types"]
    assert {t for n, t in types.items() if n.endswith(".lora_a")} == {"Q8_0"}
    assert {t for n, t in types.items() if n.endswith(".lora_b")} == {"F16"}

    def fails(*argv: str) -> str:
        assert main(["export-gguf", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("starchat export-gguf: ") and "\n" not in err and err.endswith(".")
        return err

    assert "is a LoRA adapter: name the base model file" in fails(str(tmp_path / "adapter"), str(out))
    assert "--base is for LoRA adapters" in fails(str(tiny_models.folder("qwen2")), str(out), "--base", str(base))
    own_base = Path(shutil.copy(base, tmp_path / "base.gguf"))
    assert "is the base model file; write the adapter elsewhere" in fails(
        str(tmp_path / "adapter"), str(own_base), "--base", str(own_base))
    assert own_base.read_bytes() == base.read_bytes()
    assert "applies f32, f16, q8_0 adapters, not q4_0" in fails(
        str(tmp_path / "adapter"), str(out), "--base", str(base), "--type", "q4_0")
    # `default` is the embedded model's file (llama), which this qwen2 adapter does not fit
    from model.runtime.spec import default_gguf_path

    err = fails(str(tmp_path / "adapter"), str(tmp_path / "b.gguf"), "--base", "default")
    assert err.endswith(f"trained on a qwen2 model ({tiny_models.folder('qwen2')}) but "
                        f"{default_gguf_path().name} is llama.")
    assert gguf_fields(out)["general.type"] == "adapter"  # the earlier file is untouched
    assert not (tmp_path / "b.gguf").exists()


# --- what cannot become an adapter for this base ---------------------------------------------

@pytest.fixture(scope="module")
def llama_adapter(tiny_models, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    make_adapter(_load(tiny_models.folder("llama")), folder)
    return folder


def _edit(path: Path, **changes: Any) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _narrow_llama_adapter(folder: Path) -> None:
    """Replace the adapter by one trained on a llama half as wide (32) as the base."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama")
    config.hidden_size = 32
    shutil.rmtree(folder)
    make_adapter(AutoModelForCausalLM.from_config(config), folder)


def _peft_adapter(tiny_models, arch: str, anonymous: bool = False, **config: Any):
    """Replace the adapter by one on the tiny ``arch`` model; ``anonymous``: its config does
    not name the folder it was trained on (nothing to compare but the tensors)."""
    def build(folder: Path) -> None:
        shutil.rmtree(folder)
        make_adapter(_load(tiny_models.folder(arch)), folder, **config)
        if anonymous:
            _edit(folder / "adapter_config.json", base_model_name_or_path=None)
    return build


BREAKS = {
    "another architecture": (lambda t: _peft_adapter(t, "qwen2"), "trained on a qwen2 model"),
    "another module layout": (lambda t: _peft_adapter(t, "gpt_bigcode", anonymous=True, target_modules=["c_attn"]),
                              "which llama-chatml-F32.gguf (llama, 2 layers) does not have"),
    "another width": (lambda t: _narrow_llama_adapter, "is 32x128 but blk.0.ffn_down.weight in llama-chatml-F32.gguf "
                      "is 64x128: it was trained on another model"),
    "DoRA": (lambda t: _peft_adapter(t, "llama", use_dora=True), "holds DoRA weights"),
    "modules_to_save": (lambda t: _peft_adapter(t, "llama", modules_to_save=["lm_head"]),
                        "holds fully trained modules (['lm_head'])"),
    "missing weights": (lambda t: lambda f: (f / "adapter_model.safetensors").unlink(),
                        "holds no safetensors weights"),
    "damaged weights": (lambda t: lambda f: (f / "adapter_model.safetensors").write_bytes(
        (f / "adapter_model.safetensors").read_bytes()[:5000]), "is truncated"),
    "not LoRA": (lambda t: lambda f: _edit(f / "adapter_config.json", peft_type="IA3"),
                 "is a IA3 adapter, not LoRA"),
    "base not GGUF": (lambda t: lambda f: None, "not a GGUF file"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_adapter_that_does_not_fit_is_one_sentence(case, llama_adapter, tiny_models, tmp_path):
    build, message = BREAKS[case]
    folder = Path(shutil.copytree(llama_adapter, tmp_path / "adapter"))
    build(tiny_models)(folder)
    base = tiny_models.gguf("llama", "F32")
    if case == "base not GGUF":
        base = tmp_path / "base.gguf"
        base.write_text("not a model")
    out = tmp_path / "out" / "adapter.gguf"
    out.parent.mkdir()
    with pytest.raises(ExportError) as info:
        export_lora(folder, base, out)
    text = str(info.value)
    assert message in text and "\n" not in text and text.endswith("."), text
    assert list(out.parent.iterdir()) == []  # nothing written, no temporary file left
