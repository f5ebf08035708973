"""GPU checks in one run (<= 8 minutes on one GPU) -> one JSON object on stdout.

    python benchmarks/gpu_check.py [--decode-tokens 256] [--sft-steps 30] [--skip-1b] [--skip-sft]

1. bf16 decode tok/s through our engine (``model.runtime.loading.load_model`` on CUDA, which runs the
   transformers runner there) for the embedded model and a ~1.1B random Llama, against the
   HBM bound (weight bytes read per token vs the card's bandwidth; HBM_GBPS overrides).
2. llama.cpp on the GPU through the installed ``xllamacpp`` wheel, when it has a GPU backend
   (the PyPI wheel is CPU-only: then it says so, with the devices it sees).
3. A ZeRO-3 bf16 SFT run of the embedded model (``training.train`` with
   ``deepspeed_z3_bf16.json``, one process): tokens/s and MFU (model FLOPs utilisation:
   training FLOPs per token x tokens/s over the card's bf16 peak; PEAK_TFLOPS overrides).
4. Peak GPU memory of each part.

Without CUDA it prints {"ok": false, "error": "..."} and exits with code 3 (2 is a usage
error). Argument parsing and the FLOPs / bandwidth arithmetic are tested on the CPU
(tests/training/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXIT_NO_CUDA = 3
# Dense bf16 peak (TFLOPS, no sparsity) and HBM bandwidth (GB/s) of the cards we expect.
CARDS = {"H200": (989.0, 4800.0), "H100": (989.0, 3350.0), "A100": (312.0, 2039.0),
         "L40S": (362.0, 864.0), "A10": (125.0, 600.0)}
# ~1.1B Llama (TinyLlama's shape) over the embedded tokenizer's vocabulary.
ONE_B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--decode-tokens", type=int, default=256, help="tokens generated per decode measurement")
    p.add_argument("--repeats", type=int, default=3, help="decode measurements per model (median)")
    p.add_argument("--sft-steps", type=int, default=30, help="optimizer steps of the ZeRO-3 SFT run")
    p.add_argument("--sft-batch-size", type=int, default=8)
    p.add_argument("--sft-seq-len", type=int, default=1024)
    p.add_argument("--skip-1b", action="store_true", help="no ~1B random model")
    p.add_argument("--skip-llamacpp", action="store_true")
    p.add_argument("--skip-sft", action="store_true")
    args = p.parse_args(argv)
    for name in ("decode_tokens", "repeats", "sft_steps", "sft_batch_size", "sft_seq_len"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def card_figures(name: str) -> tuple[float | None, float | None]:
    """(peak bf16 TFLOPS, HBM GB/s) of a device name; env PEAK_TFLOPS / HBM_GBPS win."""
    peak, bandwidth = next((v for k, v in CARDS.items() if k in name), (None, None))
    if os.environ.get("PEAK_TFLOPS"):
        peak = float(os.environ["PEAK_TFLOPS"])
    if os.environ.get("HBM_GBPS"):
        bandwidth = float(os.environ["HBM_GBPS"])
    return peak, bandwidth


def train_flops_per_token(params: int, layers: int, hidden: int, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token: 6N for the weights plus attention's
    12 * layers * hidden * seq_len (PaLM's appendix B accounting, no recomputation)."""
    return 6.0 * params + 12.0 * layers * hidden * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float | None) -> float | None:
    if not peak_tflops:
        return None
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)


def hbm_bound_tok_s(weight_bytes: int, bandwidth_gbps: float | None) -> float | None:
    """Single-stream decode ceiling: every weight is read from HBM once per token."""
    if not bandwidth_gbps or weight_bytes <= 0:
        return None
    return bandwidth_gbps * 1e9 / weight_bytes


def no_cuda_message() -> dict:
    return {"ok": False, "error": "gpu_check needs a CUDA device: torch.cuda.is_available() is False "
                                  "on this machine (run it on a GPU host; CPU figures: benchmarks/bench_*.py)."}


# --- the GPU parts ----------------------------------------------------------------------------

def _decode(spec: str, args: argparse.Namespace, bandwidth: float | None) -> dict:
    import torch

    from model.runtime.engine import Engine
    from model.runtime.loading import load_model

    torch.cuda.reset_peak_memory_stats()
    loaded = load_model(spec, device="cuda", dtype=torch.bfloat16)
    engine = Engine(loaded)
    weights = loaded.model.parameters() if hasattr(loaded.model, "parameters") else []
    weight_bytes = sum(p.numel() * p.element_size() for p in weights)
    prompt = [{"role": "user", "content": "Write a Python function that parses a CSV file and sums a column."}]
    rates = []
    for _ in range(args.repeats + 1):  # the first warms up kernels and allocator
        stream = engine.generate(prompt, {"max_new_tokens": args.decode_tokens, "temperature": 0.0})
        for _ in stream:
            pass
        rates.append(stream.usage["tok_per_s"])
    rates = sorted(rates[1:])
    bound = hbm_bound_tok_s(weight_bytes, bandwidth)
    median = rates[len(rates) // 2]
    return {"runner": loaded.runner_kind, "weight_gib": round(weight_bytes / 2**30, 3),
            "decode_tok_s": median, "decode_tok_s_all": rates,
            "hbm_bound_tok_s": round(bound, 1) if bound else None,
            "share_of_hbm_bound": round(median / bound, 3) if bound else None,
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _one_b_folder(work: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from model.runtime.loading import load_tokenizer

    tok = load_tokenizer("default")
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **ONE_B)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = work / "llama-1b-random"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return str(folder)


def _llamacpp(args: argparse.Namespace) -> dict:
    try:
        import xllamacpp
    except ImportError:
        return {"ran": False, "reason": "xllamacpp is not installed"}
    from model.runtime.spec import default_gguf_path

    devices = [{"name": d["name"], "type": str(d["type"])} for d in xllamacpp.get_device_info()]
    if not any("GPU" in d["type"] for d in devices):
        return {"ran": False, "reason": "the installed xllamacpp wheel has no GPU backend", "devices": devices}
    p = xllamacpp.CommonParams()
    p.model.path = str(default_gguf_path())
    p.n_ctx = 4096
    p.n_gpu_layers = 999
    srv = xllamacpp.Server(p)
    request = {"prompt": "def parse_csv(path):", "max_tokens": args.decode_tokens, "temperature": 0.0}
    srv.handle_completions(request)  # warm-up
    start = time.perf_counter()
    out = srv.handle_completions(request)
    wall = time.perf_counter() - start
    timings = out.get("timings") or {}
    tokens = (out.get("usage") or {}).get("completion_tokens")
    return {"ran": True, "devices": devices, "decode_tok_s": timings.get("predicted_per_second"),
            "tokens": tokens, "wall_s": round(wall, 3)}


def _poll_gpu_memory(done: threading.Event, peak: list[float | None]) -> None:
    """Peak used GPU memory (GiB, nvidia-smi) while the training subprocess runs."""
    while not done.wait(0.5):
        try:
            used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return
        if used:
            value = round(float(used[0]) / 1024, 2)
            peak[0] = max(peak[0] or 0.0, value)


def _sft(args: argparse.Namespace, peak: float | None, work: Path) -> dict:
    from model.runtime.loading import local_folder

    out = work / "sft"
    cmd = [sys.executable, "-m", "training.train", "training/configs/smollm2_cpu.yaml",
           "--deepspeed", "training/configs/deepspeed_z3_bf16.json", "--output_dir", str(out),
           "--use_cpu", "false", "--bf16", "true", "--torch_dtype", "bfloat16",
           "--max_steps", str(args.sft_steps), "--per_device_train_batch_size", str(args.sft_batch_size),
           "--max_seq_length", str(args.sft_seq_len), "--logging_steps", "1", "--warmup_steps", "0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0",
               LOCAL_RANK="0", WORLD_SIZE="1",
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache/torch_extensions")))
    start = time.perf_counter()
    peak_mem: list[float | None] = [None]
    done = threading.Event()
    poller = threading.Thread(target=_poll_gpu_memory, args=(done, peak_mem), daemon=True)
    poller.start()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    finally:
        done.set()
        poller.join(timeout=5)
    if r.returncode != 0:
        return {"ran": False, "reason": r.stderr[-1500:]}
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [rec for rec in records if "loss" in rec]
    # Step time from the log's clock, without the first step (kernel warm-up).
    step_s = (steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / max(1, len(steps) - 1)
    tokens_per_step = args.sft_batch_size * args.sft_seq_len  # packed rows: all positions are real
    folder = local_folder("default")
    config = json.loads((Path(folder) / "config.json").read_text())
    params = json.loads((out / "zero_partition.json").read_text())["ranks"][0]["full_numel"]
    flops = train_flops_per_token(params, config["num_hidden_layers"], config["hidden_size"], args.sft_seq_len)
    tps = tokens_per_step / step_s
    return {"ran": True, "steps": len(steps), "step_s": round(step_s, 4), "tokens_per_s": round(tps),
            "params": params, "train_flops_per_token": flops,
            "mfu": round(mfu(tps, flops, peak), 4) if peak else None,
            "loss_first_last": [steps[0]["loss"], steps[-1]["loss"]],
            "wall_s": round(time.perf_counter() - start, 1), "peak_mem_gib": peak_mem[0]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(json.dumps(no_cuda_message()))
        return EXIT_NO_CUDA
    name = torch.cuda.get_device_name()
    peak, bandwidth = card_figures(name)
    report: dict[str, Any] = {"ok": True, "device": name, "peak_bf16_tflops": peak, "hbm_gbps": bandwidth,
                              "torch": torch.__version__}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        report["decode_default"] = _decode("default", args, bandwidth)
        if not args.skip_1b:
            report["decode_1b_random"] = _decode(_one_b_folder(work), args, bandwidth)
        if not args.skip_llamacpp:
            try:
                report["llamacpp"] = _llamacpp(args)
            except Exception as exc:  # a wheel without CUDA can fail in several ways: report it
                report["llamacpp"] = {"ran": False, "reason": f"{type(exc).__name__}: {exc}"}
        if not args.skip_sft:
            report["sft_zero3_bf16"] = _sft(args, peak, work)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
