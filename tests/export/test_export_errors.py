"""Bad input to the converter: one sentence (ExportError, a ValueError; exit 2 on the command
line), never a traceback; the input folder is only read; an earlier output survives a failed
export and no temporary file is left behind. The full-disk cases use a fake (said where)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from training.export import ExportError, export_folder


@pytest.fixture
def folder(tiny_models, tmp_path) -> Path:
    """A private copy of a tiny model folder, free to break."""
    return Path(shutil.copytree(tiny_models.folder("qwen2"), tmp_path / "model"))


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _drop_tensor(folder: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[name]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


BREAKS = {
    "unsupported architecture": (lambda f: _edit_config(f, model_type="mistral"), "'mistral' is not supported"),
    "missing weights": (lambda f: (f / "model.safetensors").unlink(), "holds no safetensors weights"),
    "pickled weights only": (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
                             "pytorch_model.bin is a pickle"),
    "malformed config": (lambda f: (f / "config.json").write_text("{not json"), "cannot be read as JSON"),
    "missing config": (lambda f: (f / "config.json").unlink(), "holds no config.json"),
    "config without sizes": (lambda f: _edit_config(f, hidden_size=None), "no valid hidden size"),
    "unsupported activation": (lambda f: _edit_config(f, hidden_act="relu"), "activation 'relu'"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:50_000]), "is truncated: its tensors need"),
    "missing layer tensor": (lambda f: _drop_tensor(f, "model.layers.1.mlp.up_proj.weight"),
                             "Layer 1 of the weights is incomplete (ffn_up.weight)"),
    "more layers than config": (lambda f: _edit_config(f, num_hidden_layers=1), "a layer beyond num_hidden_layers"),
    "missing tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "holds no tokenizer.json"),
    "vocabulary smaller than tokenizer": (lambda f: _edit_config(f, vocab_size=1000), "not 1000x64"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_broken_folder_is_one_sentence(case, folder, tmp_path):
    breaks, message = BREAKS[case]
    breaks(folder)
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    with pytest.raises(ExportError) as info:
        export_folder(folder, out, "f16")
    text = str(info.value)
    assert message in text and "\n" not in text and text.endswith(".")
    assert list(out.parent.iterdir()) == []  # nothing written, no temporary file left


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_input_is_only_read_and_output_replaced_whole(folder, tmp_path):
    before = _snapshot(folder)
    out = tmp_path / "model.gguf"
    out.write_bytes(b"an earlier export")
    assert export_folder(folder, out, "q8_0") == out
    assert out.read_bytes()[:4] == b"GGUF"
    assert _snapshot(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.gguf"]
    with pytest.raises(ExportError, match="inside the model folder"):
        export_folder(folder, folder / "model.gguf")
    with pytest.raises(ExportError, match="Unknown output type 'q5_k'"):
        export_folder(folder, out, "q5_k")
    with pytest.raises(ExportError, match="does not exist"):
        export_folder(tmp_path / "nowhere", out)
    assert _snapshot(folder) == before


def test_full_disk_keeps_the_earlier_file(folder, tmp_path, monkeypatch):
    """Fakes: a disk reported full up front, then one that fills up during the write."""
    import gguf

    from training.export import writer

    out = tmp_path / "model.gguf"
    out.write_bytes(b"an earlier export")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1 << 20))
    with pytest.raises(ExportError, match="Not enough free disk space"):
        export_folder(folder, out)
    monkeypatch.setattr(writer.shutil, "disk_usage", real_usage)

    calls = []

    def fill_up(self, tensor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, tensor, *args, **kwargs)

    real_write = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", fill_up)
    with pytest.raises(ExportError, match="disk filled up"):
        export_folder(folder, out)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.gguf"]


def test_command_line(folder, tmp_path, capsys):
    from lsp_server.cli import main

    out = tmp_path / "m.gguf"
    assert main(["export-gguf", str(folder), str(out), "--type", "q4_0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and out.stat().st_size > 100_000
    (folder / "config.json").write_text("[]")
    assert main(["export-gguf", str(folder), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"starchat export-gguf: {folder / 'config.json'} does not hold a JSON object."
    assert out.read_bytes()[:4] == b"GGUF"  # the earlier export is still there
