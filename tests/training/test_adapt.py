"""``starchat adapt`` end to end on the embedded model and a small real repository, kept
cheap (a few training steps, 20 held-out positions, no HumanEval, one interrupted and
resumed run for the whole LoRA pipeline): Ctrl-C saves a checkpoint and the same command
resumes; the adapter is written for llama.cpp, served as ``default+DIR``, scored against the
base on the same positions as ``starchat eval repo``; bad input
gets one sentence and exit code 2; the repository is never written to."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model.runtime.gguf_meta import read_metadata
from model.runtime.spec import COMPLETION_SCALE_KEY, default_gguf_path
from tests.cleanup import stop_workers

ROOT = Path(__file__).resolve().parents[2]
# 20 held-out positions on short contexts: the pipeline, not the gain (benchmarks/bench_adapt.py).
QUICK = ["--positions", "20", "--context-tokens", "128", "--no-humaneval"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Real code nobody here wrote: the standard library's json package, as a git work tree."""
    import json as json_package

    root = tmp_path_factory.mktemp("repo") / "json"
    shutil.copytree(Path(json_package.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    return root


@pytest.fixture
def env(tmp_path):
    runtime = tmp_path / "run"
    yield dict(os.environ, STARCHAT_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    stop_workers(runtime)


def adapt(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lsp_server", "adapt", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=1800)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def gguf_tensor_types(path: Path) -> dict:
    from model.runtime.gguf_meta import read_header

    return {name: kind for name, (_shape, kind) in read_header(path, tensors=True)[1].items()}


def gguf_tensor_bytes(path: Path) -> dict:
    """Each tensor's digest: which tensors two files hold the same."""
    import hashlib

    from gguf import GGUFReader

    return {t.name: hashlib.sha256(t.data.tobytes()).digest() for t in GGUFReader(path).tensors}


def tree(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def interrupt_after_first_step(args: list[str], env: dict) -> tuple[int, str]:
    """Runs ``starchat adapt ARGS`` and presses Ctrl-C once a training step has been logged."""
    proc = subprocess.Popen([sys.executable, "-m", "lsp_server", "adapt", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "'loss'" in line:
                proc.send_signal(signal.SIGINT)
                break
        seen.append(proc.stderr.read())
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, "".join(seen)


def test_adapt_stops_on_ctrl_c_resumes_serves_and_scores_like_eval_repo(repo, tmp_path, env):
    """One run of the whole pipeline (each run costs a minute): Ctrl-C saves a checkpoint and
    keeps the earlier adapter; the same command resumes, finishes, writes the adapter for
    llama.cpp and (``--merge``) the merged model (8-bit where the base is 4-bit), and scores it as
    ``starchat eval repo`` does; the adapted model answers."""
    before = tree(repo)
    out = tmp_path / "runs" / "json"
    out.mkdir(parents=True)
    (out / "adapter.gguf").write_text("an earlier adapter")  # stays until the new one is complete
    args = [str(repo), "--out", str(out), "--json", "--merge", "--strength", "0.5", *QUICK,
            "--train-arg=--max_steps=6", "--train-arg=--save_steps=100", "--train-arg=--max_seq_length=128",
            "--train-arg=--per_device_train_batch_size=1", "--train-arg=--logging_steps=1"]
    code, text = interrupt_after_first_step(args, env)
    assert code == 130, text[-3000:]
    assert "run the same command again to resume" in text and "Traceback" not in text
    checkpoints = list((out / ".work" / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (out / "adapter.gguf").read_text() == "an earlier adapter"
    step = int(checkpoints[0].name.split("-")[1])
    assert 0 < step < 6

    proc = adapt(*args, env=env)  # the same command
    assert "resuming" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] == step and result["steps"] == 6 and result["train_s"] > 0
    assert result["adapter"] == str(out) and result["heldout_files"] >= 1 and result["humaneval"] is None
    for side in ("base", "adapted"):
        assert result[side]["positions"] == 20 and result[side]["context_tokens"] == 128
        assert 0 <= result[side]["exact_match"] <= 1 and 0 <= result[side]["edit_similarity"] <= 1
    assert (out / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    # --strength 0.5: the adapter applies half its trained change (adapt_cpu.yaml: alpha 128)
    assert result["strength"] == 0.5
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 64
    # merged: the adapted model is a whole file, no adapter at run time; the base's 4-bit
    # tensors are 8-bit in it (4 bits round the adapter's change away), the rest as they are
    assert result["merged"] is True and result["spec"] == str(out / "model.gguf")
    from gguf import GGMLQuantizationType as Q

    base_types = gguf_tensor_types(default_gguf_path())
    assert Q.Q4_1 in base_types.values()
    assert gguf_tensor_types(out / "model.gguf") == {
        name: Q.Q8_0 if kind in (Q.Q4_0, Q.Q4_1) else kind for name, kind in base_types.items()}
    # completions apply the whole trained change (--completion-strength, default 1): a file of
    # their own, which differs from the chat file exactly where the adapter changes weights
    assert result["completion_strength"] == 1.0 and result["completion_adapter_scale"] is None
    assert result["completion_spec"] == str(out / "completion.gguf")
    assert gguf_tensor_types(out / "completion.gguf") == gguf_tensor_types(out / "model.gguf")
    chat, completing = gguf_tensor_bytes(out / "model.gguf"), gguf_tensor_bytes(out / "completion.gguf")
    changed = {name for name in chat if chat[name] != completing[name]}
    assert any(".attn_q." in n for n in changed) and any(".ffn_down." in n for n in changed)
    assert not any(n.startswith("token_embd") or "norm" in n for n in changed)
    assert not (out / ".work").exists()  # checkpoints go once the run is complete
    assert "Held-out files" in proc.stderr and "exact match" in proc.stderr
    assert tree(repo) == before  # the repository was not written to

    # eval repo: the same split and positions, so the same score for the same model, from
    # workers started afresh as adapt's were (a warm worker reuses cached prompt chunks,
    # shifted, which can move a near tie in the last decimal)
    stop_workers(Path(env["STARCHAT_RUNTIME_DIR"]))
    # (the run-time adapter is written at --strength 0.5 and carries 1 / 0.5 as its completion
    # scale, which completions that set none apply: the worker applies a carried scale as an
    # explicit one, tests/model/test_adapter_serving.py; here, that adapt writes it and eval
    # repo's completions get it)
    assert read_metadata(out / "adapter.gguf")[COMPLETION_SCALE_KEY] == 2.0
    for spec, side in (("default", "base"), (result["completion_spec"], "adapted"), (f"default+{out}", None)):
        stop_workers(Path(env["STARCHAT_RUNTIME_DIR"]))
        ev = subprocess.run([sys.executable, "-m", "lsp_server", "eval", "repo", str(repo), "--model", spec,
                             "--positions", "20", "--context-tokens", "128", "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
        assert ev.returncode == 0, ev.stderr[-2000:]
        scored = json.loads(ev.stdout.strip().splitlines()[-1])
        assert scored["positions"] == 20 and scored["engine"] == "llama.cpp"
        assert scored["adapter_scale"] == (2.0 if "+" in spec else None)  # the scale applied
        if side is not None:
            assert (scored["exact_match"], scored["edit_similarity"]) == \
                (result[side]["exact_match"], result[side]["edit_similarity"])

    # the adapted model answers through llama.cpp, as the editor would ask it
    ask = subprocess.run([sys.executable, "-m", "lsp_server", "ask", "Say hi.", "--model", f"default+{out}",
                          "--max-new-tokens", "8", "--stats"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert ask.returncode == 0, ask.stderr[-2000:]
    assert json.loads(ask.stderr.strip().splitlines()[-1])["engine"] == "llama.cpp"


@pytest.mark.parametrize("make_args,message", [
    (lambda repo, tmp: [str(tmp / "absent"), "--out", str(tmp / "o")], "does not exist"),
    (lambda repo, tmp: [str(repo / "__init__.py"), "--out", str(tmp / "o")], "not a folder"),
    (lambda repo, tmp: [str(repo), "--out", str(repo / "runs")], "inside the repository"),
    (lambda repo, tmp: [str(tmp / "empty"), "--out", str(tmp / "o")], "holds no source or text file"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--model", "default+/nowhere"], "does not exist"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--context-tokens", "5"], "--context-tokens must be"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--full", "--merge"], "--full writes a whole model"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--strength", "0"], "--strength must be above 0"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--strength", "nan"], "--strength must be above 0"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--full", "--strength", "1"], "scale a LoRA adapter"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--full", "--completion-strength", "1"],
     "scale a LoRA adapter"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--completion-strength", "-1"],
     "--completion-strength must be above 0"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--strength", "0.1", "--completion-strength", "2"],
     "at most 4 times --strength"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--max-minutes", "nan"], "--max-minutes must be above 0"),
    (lambda repo, tmp: [str(repo), "--out", str(tmp / "o"), "--max-minutes", "-5"], "--max-minutes must be above 0"),
])
def test_bad_input_is_one_sentence_and_exit_2(repo, tmp_path, env, make_args, message):
    (tmp_path / "empty").mkdir()
    proc = adapt(*make_args(repo, tmp_path), "--no-humaneval", env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_full_fine_tuning_writes_a_whole_gguf_model(repo, tmp_path, env):
    out = tmp_path / "full"
    proc = adapt(str(repo), "--out", str(out), "--full", "--json", *QUICK,
                 "--train-arg=--max_steps=1", "--train-arg=--max_seq_length=64",
                 "--train-arg=--per_device_train_batch_size=1", env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["spec"] == str(out / "model.gguf") and result["full"] is True
    assert (out / "model.gguf").read_bytes()[:4] == b"GGUF" and (out / "model" / "config.json").is_file()
    assert result["adapted"]["positions"] == 20


def test_a_full_disk_is_one_sentence_and_exit_1(repo, tmp_path, monkeypatch, capsys):
    """FAKE fault: the disk fills up as the run starts writing (prepare_work raises ENOSPC)."""
    import errno

    from training import adapt as adapt_module
    from training.repo import rundir

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / ".work"))

    monkeypatch.setattr(rundir, "prepare_work", full)
    code = adapt_module.main([str(repo), "--out", str(tmp_path / "out"), "--no-humaneval"])
    err = capsys.readouterr().err
    assert code == 1 and "the disk is full" in err and "Traceback" not in err


def test_a_folder_base_is_written_as_gguf_beside_its_adapter(repo, tmp_path, env, tiny_models):
    """A transformers folder as the base (a tiny random Llama): llama.cpp needs the base as
    GGUF too, so base.gguf is written beside the adapter and the adapted spec is
    ``OUT/base.gguf+OUT/adapter.gguf``; a merged model an earlier run left there is removed, since this
    run did not write it."""
    out = tmp_path / "folder-base"
    out.mkdir()
    (out / "model.gguf").write_text("an earlier run's merged model")
    proc = adapt(str(repo), "--out", str(out), "--model", str(tiny_models.folder("llama")), "--json", *QUICK,
                 "--train-arg=--max_steps=1", "--train-arg=--max_seq_length=64",
                 "--train-arg=--per_device_train_batch_size=1", env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["base_spec"] == str(out / "base.gguf")
    assert result["spec"] == result["completion_spec"] == f"{out / 'base.gguf'}+{out / 'adapter.gguf'}"
    assert result["completion_adapter_scale"] == 2.0  # the defaults' two strengths: 1 / 0.5
    # the adapter carries it: default+DIR in the editor needs no completion setting
    assert read_metadata(out / "adapter.gguf")[COMPLETION_SCALE_KEY] == pytest.approx(2.0, abs=1e-4)
    assert sorted(p.name for p in out.iterdir()) == ["adapt.json", "adapter", "adapter.gguf", "base.gguf"]
    assert (out / "base.gguf").read_bytes()[:4] == b"GGUF" and (out / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    assert result["base"]["positions"] == result["adapted"]["positions"] == 20
