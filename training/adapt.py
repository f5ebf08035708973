"""``starchat adapt REPO --out DIR``: the model learns the user's own code, and the gain is measured.

1. **Read** the repository (``training.repo.walk``): its text files minus vendored,
   generated, binary, huge and secret-looking ones; split by file into train and held-out.
2. **Examples** in the model's own completion formats (``training.repo.examples``), a share
   of the chat recipe's dialogues (``--replay``, against forgetting how to chat), and, on
   request, the editor's feedback log (``--feedback``) and exported conversations.
3. **Train** (``training.repo.fit``): LoRA on every linear layer by default, the whole model
   with ``--full``; the CPU recipe ``training/configs/adapt_cpu.yaml`` (``adapt_gpu.yaml`` on
   a GPU). Ctrl-C saves a checkpoint; the same command again resumes.
4. **Convert** for llama.cpp (``training.export``): ``DIR/adapter.gguf``, served on top of
   the base GGUF as the spec ``BASE+DIR`` (``default+DIR`` for the embedded model); after
   ``--full`` a whole ``DIR/model.gguf``. ``--merge`` also folds the adapter into the base
   and writes ``DIR/model.gguf`` quantized as the base file is but never below 8 bits (Q8_0
   for the embedded Q4_1 model: re-quantized to 4 bits the adapter's change is mostly
   rounded away, ``training.export.merged_qtype``): no adapter is applied at run time (a
   LoRA adapter on llama.cpp costs 15-25%, docs/adapt.md); that file is then the adapted
   model scored and reported. Outputs replace an earlier run's only once complete
   (``training.repo.rundir``). Two strengths (``fit.set_strength``): chat and commands
   apply ``--strength`` of the trained change, inline completions ``--completion-strength``
   -- completing the repository's code is what the adapter learnt, answering chat requests
   is what it costs (docs/adapt.md). The run-time adapter is written at ``--strength`` and
   carries ``completion / strength`` as its own completion scale
   (``model.runtime.spec.COMPLETION_SCALE_KEY``), which the worker applies to every
   completion that sets none: ``default+DIR`` in the editor needs no other setting. With
   ``--merge`` completions get a file of their own, ``DIR/completion.gguf`` (the editor's
   ``starchat.completion.model``).
5. **Score** base and adapted on the held-out files (``training.evaluation.repo_eval``,
   through the model worker, as the editor asks: the adapted model as completions get it)
   and on HumanEval (164 problems, pass@1, greedy; the adapted model as chat gets it) so a
   gain and any forgetting show side by side.

Exit codes: 0 done, 2 bad input (one sentence), 1 a failure of the machine (a full disk),
130 stopped by Ctrl-C (a checkpoint was saved). ``--json`` prints one JSON object last.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("training.adapt")
CONFIGS = Path(__file__).resolve().parent / "configs"
#: The chat recipe's dialogues; ``REPLAY`` of them are mixed into every run (``--replay``):
#: trained on code alone, the model answered fewer HumanEval chat requests (docs/adapt.md).
REPLAY_DIALOGUES = Path(__file__).resolve().parent / "data" / "code_assistant.jsonl"
REPLAY = 100
#: How much of the trained LoRA change is served (``--strength``; ``fit.set_strength``):
#: on 600 held-out positions of ``rich``, at 1 the merged model's next-line exact match was
#: 1.38x the base's and HumanEval fell from 12 to 5 of 164; at 0.7 1.31x and 9; at 0.65
#: 1.29x and 13; at 0.5 1.25x and 11 (docs/adapt.md). HumanEval's count moves by a few
#: problems between neighbouring strengths and between retrainings of the same recipe: at
#: 0.65 four adapters lost +1, -2, -1 and -4 problems; at 0.5 two lost -1 and 0. Chat gets
#: 0.5, the strength that kept within the 2 problems every time it was measured (completions
#: get ``COMPLETION_STRENGTH``, so the next-line gain does not depend on it).
STRENGTH = 0.5
#: How much of it inline completions apply (``--completion-strength``): completing the
#: repository's code is the task the adapter was trained on, and the forgetting measured at
#: full strength is in answers to chat requests (docs/adapt.md), which keep ``STRENGTH``.
COMPLETION_STRENGTH = 1.0


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    from model.prompt.fim import DEFAULT_CONTEXT_TOKENS
    from training.evaluation.repo_eval import POSITIONS
    from training.repo.walk import DEFAULT_SEED, MAX_FILE_BYTES

    p = argparse.ArgumentParser(prog="starchat adapt", description=(
        "Adapt a model to a repository's code: train (LoRA by default), convert for llama.cpp, and "
        "compare base and adapted on the repository's held-out files and on HumanEval."))
    p.add_argument("repo", help="a git work tree or a folder of code (never written to)")
    p.add_argument("--out", required=True, help="folder for the adapter (new, or one an earlier run wrote)")
    p.add_argument("--model", default="default", help="the base model spec (default: the embedded model)")
    p.add_argument("--full", action="store_true", help="fine-tune every weight instead of a LoRA adapter")
    p.add_argument("--merge", action="store_true",
                   help="also write DIR/model.gguf, the adapter merged into the base (quantized as the base is, "
                        "but at least 8-bit: 4 bits round the adapter away); it is the adapted model scored")
    p.add_argument("--strength", type=float,
                   help=f"how much of the trained LoRA change the adapted model applies (default {STRENGTH}; "
                        "1: as trained; lower keeps more of the base's general ability, docs/adapt.md)")
    p.add_argument("--completion-strength", type=float,
                   help=f"how much of it inline completions apply (default {COMPLETION_STRENGTH}: as trained); "
                        "with --merge they get DIR/completion.gguf, without it the adapter at a scale of "
                        "completion-strength / strength (the setting starchat.completion.adapterScale)")
    p.add_argument("--recipe", help="training recipe YAML (default: adapt_cpu.yaml, adapt_gpu.yaml on a GPU)")
    p.add_argument("--train-arg", action="append", default=[], metavar="--KEY=VALUE",
                   help="override one recipe setting, e.g. --train-arg=--max_steps=20 (repeatable)")
    p.add_argument("--max-minutes", type=float,
                   help="fit training into this many minutes: the steps that do not fit are left out, the "
                        "learning-rate schedule ending with the last that does (the adapter is saved)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the held-out split's seed (eval repo takes the same)")
    p.add_argument("--max-file-kb", type=int, default=MAX_FILE_BYTES // 1024, help="skip files larger than this")
    p.add_argument("--feedback", action="store_true", help="also train on the editor's feedback log (docs/adapt.md)")
    p.add_argument("--conversations", help="also train on exported conversations (ChatML JSONL)")
    p.add_argument("--replay", type=int, default=REPLAY, metavar="N",
                   help=f"mix in N of the chat recipe's dialogues (default {REPLAY}; 0: none) so the model "
                        "keeps answering chat requests as before (docs/adapt.md)")
    p.add_argument("--positions", type=int, default=POSITIONS, help="held-out positions to score")
    p.add_argument("--context-tokens", type=int, default=DEFAULT_CONTEXT_TOKENS,
                   help="prompt tokens per scored position, as the editor's starchat.completion.contextTokens "
                        f"(default {DEFAULT_CONTEXT_TOKENS})")
    p.add_argument("--no-humaneval", action="store_true", help="skip HumanEval (no forgetting check)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run HumanEval's model-written code without OS isolation where none is available")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    return p


def _cpu_bf16(args: argparse.Namespace, recipe: str) -> list[str]:
    """``--bf16 true`` for the CPU recipe where the CPU computes bf16 natively (AVX512-BF16,
    AMX): measured here, a training step took 7.4 s instead of 12.2 s in float32
    (docs/adapt.md); elsewhere bf16 is emulated and slower, so float32 stays."""
    import torch

    if torch.cuda.is_available() or any("--bf16" in a for a in args.train_arg):
        return []
    from training.config import parse_config

    if not parse_config([recipe, *args.train_arg])[3].use_cpu:
        return []
    return ["--bf16", "true"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else []


def _fingerprint(args: argparse.Namespace, spec: Any, repo: Path, recipe: str) -> dict:
    return {"repo": str(repo), "model": str(spec), "full": args.full, "seed": args.seed,
            "recipe": recipe, "recipe_text": Path(recipe).read_text(encoding="utf-8"),
            "train_args": args.train_arg, "max_file_kb": args.max_file_kb, "feedback": args.feedback,
            "conversations": str(Path(args.conversations).resolve()) if args.conversations else None,
            "replay": args.replay}


def _examples(args: argparse.Namespace, tokenizer: Any, found: Any, train_files: list, max_length: int) -> list[dict]:
    from training.feedback import feedback_examples
    from training.repo.examples import code_examples

    examples = code_examples(tokenizer, train_files, max_length=max_length, seed=args.seed)
    if args.feedback:
        examples += feedback_examples(tokenizer, max_length, found.root)
    if args.conversations:
        from training.data import load_dialogues

        examples += _dialogue_examples(tokenizer, load_dialogues(args.conversations), max_length)
    if args.replay > 0:
        import random

        from training.data import load_dialogues

        rows = load_dialogues(REPLAY_DIALOGUES)
        rows = random.Random(args.seed).sample(rows, min(args.replay, len(rows)))
        examples += _dialogue_examples(tokenizer, rows, max_length)
    return examples


def _dialogue_examples(tokenizer: Any, rows: list[dict], max_length: int) -> list[dict]:
    """Dialogues as the chat recipe trains them (loss on the assistant's turns only)."""
    from training.tokenize import has_labels, tokenize_dialogue

    return [e for e in (tokenize_dialogue(tokenizer, r["messages"], max_length) for r in rows) if has_labels(e)]


def _base_files(spec: Any) -> tuple[str, Path | None]:
    """(the transformers folder to train from, the GGUF file the adapter runs on or None)."""
    from model.runtime.loading import local_folder

    if spec.kind == "hub":
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return snapshot_download(spec.location, local_files_only=offline), None
    return local_folder(spec), Path(spec.location) if spec.kind == "gguf" else None


def _score_repo(spec: Any, points: list, fim: bool, context_tokens: int) -> dict:
    from model.serving.client import WorkerClient
    from training.evaluation.repo_eval import score

    def progress(k: int, n: int) -> None:
        if k % 50 == 0 or k == n:
            _say(f"    {k}/{n} positions")

    with WorkerClient(spec) as client:
        return score(client, points, fim=fim, context_tokens=context_tokens, progress=progress)


def _humaneval(spec: Any, out: Path, unsafe: bool) -> float:
    from training.evaluation.backends import make_backend
    from training.evaluation.humaneval import run_humaneval, score

    backend = make_backend(spec)
    try:
        rows = run_humaneval(backend, out / "results.jsonl", progress=True, unsafe=unsafe)
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    return float(score(rows)["pass@1"])


def _merge_at(folder: str, adapter: Path, scale: float, out: Path, qtype: str) -> str:
    """Fold ``adapter`` at ``scale`` times its strength into the base ``folder`` and write the
    result as the GGUF file ``out`` (``qtype``); returns its name."""
    from training.export import export_folder
    from training.repo.fit import merge, set_strength

    if scale != 1.0:
        scaled = out.with_name(f"{out.stem}-adapter")
        shutil.copytree(adapter, scaled, dirs_exist_ok=True)
        set_strength(scaled, scale)
        adapter = scaled
    merged = merge(folder, adapter, out.with_name(f"{out.stem}-merged"))
    export_folder(merged, out, qtype)
    return out.name


def run(args: argparse.Namespace) -> dict:
    from model.runtime.spec import ModelSpec
    from training.evaluation.repo_eval import positions
    from training.repo import rundir
    from training.repo.walk import scan, split

    started = time.monotonic()
    spec = ModelSpec.parse(args.model)
    if spec.adapter:
        raise ValueError("--model must be a base model, not one with an adapter already.")
    if args.merge and args.full:
        raise ValueError("--merge folds a LoRA adapter into the base; --full writes a whole model already.")
    if args.full and (args.strength is not None or args.completion_strength is not None):
        raise ValueError("--strength and --completion-strength scale a LoRA adapter; --full trains every weight.")
    strength = STRENGTH if args.strength is None else args.strength
    if not 0 < strength <= 2:  # (NaN fails too)
        raise ValueError(f"--strength must be above 0 and at most 2, not {args.strength}.")
    completion = COMPLETION_STRENGTH if args.completion_strength is None else args.completion_strength
    if not 0 < completion <= 2:
        raise ValueError(f"--completion-strength must be above 0 and at most 2, not {args.completion_strength}.")
    from model.prompt.params import MAX_ADAPTER_SCALE

    completion_scale = round(completion / strength, 4)  # of the adapter written at `strength`
    if completion_scale > MAX_ADAPTER_SCALE:
        raise ValueError(f"--completion-strength may be at most {MAX_ADAPTER_SCALE:g} times --strength.")
    if args.max_minutes is not None and not 0 < args.max_minutes <= 7 * 24 * 60:
        raise ValueError(f"--max-minutes must be above 0 and at most a week, not {args.max_minutes}.")
    from model.prompt.fim import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS

    if not MIN_CONTEXT_TOKENS <= args.context_tokens <= MAX_CONTEXT_TOKENS:
        raise ValueError(f"--context-tokens must be between {MIN_CONTEXT_TOKENS} and {MAX_CONTEXT_TOKENS}.")
    repo, out = Path(args.repo).expanduser(), Path(args.out).expanduser()
    state = rundir.check_out_dir(out, repo)
    if not args.no_humaneval:  # before hours of training, not after
        from training.evaluation.sandbox import SandboxUnavailable, require_isolation

        try:
            require_isolation(args.unsafe_no_sandbox)
        except SandboxUnavailable as exc:
            raise ValueError(f"{exc} (or pass --no-humaneval to skip the forgetting check)") from None
    _say(f"[1/6] Reading {repo}")
    found = scan(repo, max_file_bytes=args.max_file_kb * 1024)
    train_files, held = split(found.files, seed=args.seed)
    points = positions(held, args.positions, seed=args.seed)
    skipped = ", ".join(f"{n} {why}" for why, n in found.skipped.most_common()) or "none"
    _say(f"    {len(found.files)} files ({found.total_bytes / 1024:.0f} KiB); held out {len(held)} "
         f"({len(points)} positions to score); left out: {skipped}")

    import torch

    recipe = args.recipe or str(CONFIGS / ("adapt_gpu.yaml" if torch.cuda.is_available() else "adapt_cpu.yaml"))
    if not Path(recipe).is_file():
        raise ValueError(f"The recipe {recipe} does not exist.")
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(args, spec, found.root, recipe)
    if int(os.environ.get("RANK", "0")) == 0:
        work, resumed = rundir.prepare_work(out, fingerprint)
    else:  # the other ranks of a torchrun/deepspeed launch use the main process's work folder
        work, resumed = rundir.wait_for_work(out, fingerprint), False
    if state == "earlier run":
        _say(f"    {out} holds an earlier adapter: it stays in use until this one is complete")
    folder, base_gguf = _base_files(spec)

    from transformers import AutoTokenizer

    from training.config import parse_config
    from training.repo.examples import target_tokens
    from training.repo.fit import fit

    max_length = parse_config([recipe, *args.train_arg])[1].max_seq_length
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _say("[2/6] Building examples")
    examples = _examples(args, tokenizer, found, train_files, max_length)
    _say(f"    {len(examples)} examples, {target_tokens(examples)} tokens to learn")
    _say(f"[3/6] Training ({'every weight' if args.full else 'LoRA'}; Ctrl-C saves a checkpoint)"
         + (" - resuming" if resumed else ""))
    recipe_args = [recipe, *_cpu_bf16(args, recipe), *args.train_arg]
    result = fit(folder, examples, work, recipe_args, max_minutes=args.max_minutes, full=args.full)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun/deepspeed: the main process goes on alone
        return {}

    _say("[4/6] Converting for llama.cpp")
    from training.export import export_folder, export_lora, merged_qtype

    if args.full:
        export_folder(result.output, work / "model.gguf", "q8_0")
        written = ["model", "model.gguf"]
    else:
        from training.repo.fit import set_strength

        written = ["adapter", "adapter.gguf"]
        if base_gguf is None:  # a folder base: llama.cpp needs it as GGUF too
            base_gguf = work / "base.gguf"
            export_folder(folder, base_gguf, "f16")
            written.append("base.gguf")
        set_strength(result.output, strength)
        export_lora(result.output, base_gguf, work / "adapter.gguf", completion_scale=completion_scale)
        if args.merge:
            qtype = merged_qtype(base_gguf)
            written.append(_merge_at(folder, result.output, 1.0, work / "model.gguf", qtype))
            if completion != strength:
                written.append(_merge_at(folder, result.output, completion / strength, work / "completion.gguf", qtype))
    rundir.publish(work, out, written)
    if "base.gguf" in written:
        spec = ModelSpec.parse(str(out / "base.gguf"))
    if args.full or args.merge:
        adapted = ModelSpec.parse(str(out / "model.gguf"))
    else:
        adapted = ModelSpec.parse(f"{spec}+{out}")
    completing = ModelSpec.parse(str(out / "completion.gguf")) if "completion.gguf" in written else adapted
    record: dict[str, Any] = {
        "adapter": str(out), "spec": str(adapted), "base_spec": str(spec), "repo": str(found.root),
        "files": len(found.files), "train_files": len(train_files), "heldout_files": len(held),
        "bytes": found.total_bytes, "examples": len(examples), "steps": result.steps,
        "train_s": result.train_s, "final_loss": result.final_loss, "resumed_from": result.resumed_from,
        "full": args.full, "merged": args.merge, "strength": None if args.full else strength,
        "completion_strength": None if args.full else completion,
        # what completions use: DIR/completion.gguf (the editor's starchat.completion.model) after
        # --merge, else the adapter at the completion scale it carries
        "completion_spec": str(completing),
        "completion_adapter_scale": completion_scale if completing.adapter is not None else None,
        "seed": args.seed, "recipe": recipe_args,
    }
    rundir.write_json(out / rundir.RECORD, record)

    _say(f"[5/6] Scoring {len(points)} held-out positions: base, then adapted")
    from model.serving.client import WorkerClient

    with WorkerClient(spec) as client:
        fim = client.ready_info().get("fim", "none") != "none"
    record["base"] = _score_repo(spec, points, fim, args.context_tokens)
    # (as the editor asks: no adapter_scale, so the worker applies the adapter's own)
    record["adapted"] = _score_repo(completing, points, fim, args.context_tokens)
    record["humaneval"] = None
    if not args.no_humaneval:
        _say("[6/6] HumanEval (164 problems, greedy): base, then adapted")
        record["humaneval"] = {"base": _humaneval(spec, work / "humaneval-base", args.unsafe_no_sandbox),
                               "adapted": _humaneval(adapted, work / "humaneval-adapted", args.unsafe_no_sandbox)}
    record["total_s"] = round(time.monotonic() - started, 1)
    rundir.write_json(out / rundir.RECORD, record)
    rundir.finish(work)
    return record


def _summary(r: dict) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    base, new = r["base"], r["adapted"]
    ratio = f" ({new['exact_match'] / base['exact_match']:.2f}x)" if base["exact_match"] else ""
    use = f"Adapter: {r['adapter']}  (use it as --model / starchat.model: {r['spec']})"
    if r.get("merged"):
        use = (f"Merged model: {r['spec']}  (use it as --model / starchat.model; the adapter alone: "
               f"{r['base_spec']}+{r['adapter']})")
    lines = [use]
    scale = r.get("completion_adapter_scale")
    if r.get("completion_spec") and r["completion_spec"] != r["spec"]:
        lines.append(f"Completions (strength {r['completion_strength']:g}; chat {r['strength']:g}): "
                     f"starchat.completion.model {r['completion_spec']}")
    elif scale not in (None, 1.0):
        lines.append(f"Completions apply {scale:g} of the adapter (strength {r['completion_strength']:g}; "
                     f"chat {r['strength']:g}): the adapter carries that scale, no setting needed")
    lines += [f"Held-out files: {r['heldout_files']}, {base['positions']} positions (adapted: as completions get it)",
             f"  next-line exact match   base {pct(base['exact_match'])}  adapted {pct(new['exact_match'])}{ratio}",
             f"  edit similarity         base {base['edit_similarity']:.3f}  adapted {new['edit_similarity']:.3f}"]
    if base.get("fim_exact_match") is not None:
        lines.append(f"  single-line FIM         base {pct(base['fim_exact_match'])}  adapted {pct(new['fim_exact_match'])}")
    if r.get("humaneval"):
        lines.append(f"  HumanEval pass@1        base {pct(r['humaneval']['base'])}  adapted {pct(r['humaneval']['adapted'])}"
                     " (as chat gets it)")
    lines.append(f"Training: {r['steps']} steps in {r['train_s'] / 60:.1f} min")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from model.runtime.spec import ModelSpecError
    from model.serving.client import WorkerError
    from training.config import ConfigError
    from training.data import DialogueError
    from training.evaluation.repo_eval import TooFewPositions
    from training.repo.fit import Interrupted
    from training.repo.rundir import OutDirError
    from training.repo.walk import RepoError

    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except Interrupted as exc:
        _say(f"starchat adapt: {exc} The checkpoint is saved; run the same command again to resume "
             "(an earlier adapter in --out is untouched).")
        return 130
    except KeyboardInterrupt:
        _say("starchat adapt: stopped; run the same command again to resume from the last checkpoint.")
        return 130
    except (RepoError, OutDirError, TooFewPositions, ModelSpecError, WorkerError, ConfigError, DialogueError,
            ValueError) as exc:
        _say(f"starchat adapt: {exc}")
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            _say(f"starchat adapt: the disk is full ({exc.filename or args.out}); free some space and run the "
                 "same command again: it resumes, and an earlier adapter in --out is untouched.")
            return 1
        raise
    if not result:  # not the main process of a multi-process run
        return 0
    _say(_summary(result))
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
