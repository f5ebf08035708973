"""lm-evaluation-harness end to end, offline, on the project's own multiple-choice task.

The embedded model goes through ``starchat eval lm-eval`` (our engine adapter); a tiny
folder goes through lm-eval's ``hf`` class and through our adapter, and the two must give the
same log-likelihoods for every choice (the adapter's arithmetic, checked against lm-eval's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "training" / "data" / "python_mc.jsonl"
TASK = "starchat_python_mc"


def offline_env(tmp_path: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                HF_DATASETS_CACHE=str(tmp_path / "datasets"))


def test_task_file_is_ours_and_well_formed():
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 50
    assert len({r["question"] for r in rows}) == len(rows)
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4
        assert r["answer"] in range(4)
    counts = [sum(r["answer"] == i for r in rows) for i in range(4)]
    assert max(counts) - min(counts) <= 1  # no letter is a free win


def test_cli_runs_our_task_on_the_embedded_model(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "lsp_server", "eval", "lm-eval", "--model", "default",
                        "--tasks", TASK, "--limit", "4", "--out-dir", str(out)],
                       cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["engine"] == "starchat" and result["n_samples"] == {TASK: 4}
    for metric in ("acc,none", "acc_norm,none"):
        assert 0.0 <= result["results"][TASK][metric] <= 1.0
    assert json.loads((out / "results.json").read_text())["results"] == result["results"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]
    for s in samples:  # four real log-likelihoods per question, negative
        assert len(s["filtered_resps"]) == 4 and all(ll < 0 for ll, _ in s["filtered_resps"])
    assert sum(s["acc"] for s in samples) / 4 == result["results"][TASK]["acc,none"]


def test_cli_rejects_unknown_task(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lsp_server", "eval", "lm-eval", "--tasks", "no_such_task_x",
                        "--out-dir", str(tmp_path / "o")], cwd=tmp_path, env=offline_env(tmp_path),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    assert "Unknown lm-eval task 'no_such_task_x'" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tests.tiny_models import tiny_folder

    return tiny_folder("llama", tmp_path_factory.mktemp("tiny-lm-eval"), template="none")


def test_tiny_folder_hf_class_and_our_adapter_agree(tiny_dir, monkeypatch):
    from training.evaluation.lm_harness import run_lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tiny_dir
    by_engine = {e: run_lm_eval(str(folder), [TASK], limit=5, engine=e) for e in ("hf", "starchat")}
    assert by_engine["hf"]["engine"] == "hf"
    for result in by_engine.values():
        assert result["n_samples"] == {TASK: 5}
        assert 0.0 <= result["results"][TASK]["acc,none"] <= 1.0
    hf, ours = (by_engine[e]["samples"][TASK] for e in ("hf", "starchat"))
    for a, b in zip(hf, ours, strict=True):
        assert a["doc_id"] == b["doc_id"]
        hf_ll = [float(ll) for ll, _ in a["filtered_resps"]]
        our_ll = [float(ll) for ll, _ in b["filtered_resps"]]
        assert our_ll == pytest.approx(hf_ll, abs=2e-3)


def test_adapter_rolling_and_generation_match_hf_class(tiny_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from training.evaluation.lm_harness import make_engine_lm

    ours = make_engine_lm(str(tiny_dir))
    hf = HFLM(pretrained=str(tiny_dir), device="cpu", dtype="float32", batch_size=1)
    text = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n"
    rolling = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    ours_ll, hf_ll = ours.loglikelihood_rolling(rolling)[0], hf.loglikelihood_rolling(rolling)[0]
    assert ours_ll < 0 and ours_ll == pytest.approx(hf_ll, abs=5e-3)
    generation = [Instance("generate_until", {}, ("def add(a, b):", {"until": ["\n\n"], "max_gen_toks": 8,
                                                                     "do_sample": False}), 0)]
    ours_text, hf_text = ours.generate_until(generation)[0], hf.generate_until(generation)[0]
    assert ours_text and "\n\n" not in ours_text
    assert ours_text == hf_text  # greedy on the same weights
