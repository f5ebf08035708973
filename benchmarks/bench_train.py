"""Training step time and throughput -> JSON on stdout.

CPU (default here): the embedded model, full fine-tune and LoRA, packed rows of real data.
On a CUDA device the same loop runs in bf16 and also reports MFU (model FLOPs utilisation,
6 x params x tokens/s over the card's peak; set PEAK_TFLOPS for cards other than H100/H200).
Multi-GPU ZeRO-3 throughput comes from a real run's log instead: launch
`deepspeed --num_gpus N -m training.train RECIPE --deepspeed training/configs/deepspeed_z3_bf16.json`
and read `train_samples_per_second` from `OUTPUT/train_log.jsonl`.
    python benchmarks/bench_train.py [--steps 3] [--batch-size 4] [--seq-len 256] [--lora]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from model.loading import load_tokenizer, local_folder  # noqa: E402
from training.data import load_dialogues  # noqa: E402
from training.packing import PackedCollator, pack_examples  # noqa: E402
from training.tokenize import add_chat_tokens, tokenize_dialogues  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops() -> float | None:
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"])
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(lora: bool, args: argparse.Namespace, device: str) -> dict:
    from transformers import AutoModelForCausalLM

    from training.train import apply_lora

    tokenizer = add_chat_tokens(load_tokenizer("default"), force_template=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    _, folder = local_folder("default")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    add_chat_tokens(tokenizer, model)
    model.config.use_cache = False
    if lora:
        model = apply_lora(model, argparse.Namespace(lora_r=16, lora_alpha=32, lora_dropout=0.0,
                                                     lora_target_modules=["all-linear"]), tokenizer)
    model.to(device).train()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    examples = tokenize_dialogues(tokenizer, load_dialogues(ROOT / "training/data/code_assistant.jsonl"),
                                  args.seq_len)
    rows = pack_examples(examples, args.seq_len)
    collate = PackedCollator(tokenizer.pad_token_id)
    times, tokens = [], []
    for step in range(args.steps + 1):  # step 0 warms up (allocations, kernels) and is not counted
        batch = collate(rows[step * args.batch_size:(step + 1) * args.batch_size] or rows[:args.batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
            tokens.append(int(batch["input_ids"].numel()))
    step_s = sum(times) / len(times)
    tokens_per_s = sum(tokens) / sum(times)
    result = {"mode": "lora" if lora else "full", "device": device, "dtype": str(dtype).split(".")[-1],
              "params": params, "trainable_params": trainable, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "steps": args.steps, "step_s": round(step_s, 3),
              "tokens_per_s": round(tokens_per_s, 1), "torch_threads": torch.get_num_threads()}
    peak = peak_tflops() if device == "cuda" else None
    if peak:
        result["mfu"] = round(6 * params * tokens_per_s / (peak * 1e12), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lora", action="store_true", help="measure only LoRA (default: full and LoRA)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    modes = [True] if args.lora else [False, True]
    results = [measure(lora, args, device) for lora in modes]
    print(json.dumps({"benchmark": "bench_train", "results": results}, indent=2))


if __name__ == "__main__":
    main()
