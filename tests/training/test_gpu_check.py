"""benchmarks/gpu_check.py on a machine without CUDA: its message, arguments and arithmetic."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script runs for real")
def test_without_cuda_it_says_so_in_json_and_exit_code():
    r = subprocess.run([sys.executable, str(SCRIPT), "--skip-1b"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3
    report = json.loads(r.stdout)
    assert report["ok"] is False and "needs a CUDA device" in report["error"]
    assert "Traceback" not in r.stderr


def test_bad_arguments_exit_2_with_a_sentence():
    r = subprocess.run([sys.executable, str(SCRIPT), "--sft-steps", "0"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "--sft-steps must be at least 1" in r.stderr


def test_arguments_defaults_fit_the_time_budget(gpu_check):
    args = gpu_check.parse_args([])
    assert (args.decode_tokens, args.repeats, args.sft_steps) == (256, 3, 30)
    assert gpu_check.parse_args(["--skip-sft", "--skip-1b"]).skip_sft is True


def test_flops_mfu_and_bandwidth_arithmetic(gpu_check, monkeypatch):
    # 6N per token for weights, 12 * layers * hidden * seq for attention.
    assert gpu_check.train_flops_per_token(100, 2, 10, 5) == 6 * 100 + 12 * 2 * 10 * 5
    smollm = gpu_check.train_flops_per_token(134_515_008, 30, 576, 1024)
    assert smollm == pytest.approx(1.019e9, rel=1e-3)
    # 10k tokens/s of that on a 989 TFLOPS card: ~1% of peak.
    assert gpu_check.mfu(10_000, smollm, 989.0) == pytest.approx(10_000 * smollm / 989e12)
    assert gpu_check.mfu(10_000, smollm, None) is None
    # 2.2 GB of bf16 weights on 4.8 TB/s HBM: at most ~2180 tokens/s single-stream.
    assert gpu_check.hbm_bound_tok_s(2_200_000_000, 4800.0) == pytest.approx(2181.8, rel=1e-3)
    assert gpu_check.card_figures("NVIDIA H200") == (989.0, 4800.0)
    assert gpu_check.card_figures("Some GPU") == (None, None)
    monkeypatch.setenv("PEAK_TFLOPS", "100")
    monkeypatch.setenv("HBM_GBPS", "500")
    assert gpu_check.card_figures("NVIDIA H200") == (100.0, 500.0)
    # The ~1B model really is about 1B parameters.
    c = gpu_check.ONE_B
    h, f, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], 49152
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    params = layers * (2 * h * h + 2 * h * kv + 3 * h * f + 2 * h) + 2 * vocab * h + h
    assert 0.9e9 < params < 1.3e9
