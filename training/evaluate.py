"""`starchat eval ...`: judge comparison, HumanEval pass@k and plot checks, one command each.

    starchat eval generate --model SPEC [--prompts FILE] --out answers.jsonl
    starchat eval judge --a A.jsonl --b B.jsonl (--judge SPEC | --judge-url URL)
    starchat eval humaneval --model SPEC [--limit N] [--samples K]
    starchat eval plots --answers answers.jsonl
    starchat eval lm-eval --model SPEC --tasks LIST [--limit N]
    starchat eval repo REPO --model SPEC [--positions N] [--seed S]

Each prints one JSON line on stdout; progress and logs go to stderr. Bad input exits with
code 2 and a one-sentence error. Generation runs the model in this process by default
(`--via-worker` uses the shared model worker instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from training.evaluation.backends import DEFAULT_API_KEY_ENV, BackendError
from training.evaluation.sandbox import UNSAFE_FLAG, SandboxUnavailable, require_isolation

log = logging.getLogger("starchat.eval")

CHAT_FORMATS = ("auto", "template", "starchat", "dialogue")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _adapter_scale(text: str) -> float:
    """``--adapter-scale X``, checked as a request's ``adapter_scale`` is (model.prompt.params)."""
    from model.prompt.params import GenerationParams

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        return GenerationParams(adapter_scale=value).adapter_scale
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="model spec: default, a folder, a .gguf file or a HF id")
    parser.add_argument("--chat-format", choices=CHAT_FORMATS, default="auto",
                        help="prompt format: the model's template, StarChat tokens, or dialogue prompting")
    parser.add_argument("--via-worker", action="store_true", help="generate through the shared model worker")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starchat eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="answer the prompt set (resumable)")
    _model_options(gen)
    gen.add_argument("--prompts", default=None, help="prompt JSONL (default: the bundled code_eval_prompts.jsonl)")
    gen.add_argument("--out", required=True, help="answers JSONL; a rerun continues where it stopped")
    gen.add_argument("--limit", type=_positive, help="only the first N prompts")
    gen.add_argument("--category", help="only prompts of this category (e.g. plot)")
    gen.add_argument("--every", type=_positive, default=1, help="only every N-th prompt (a spread-out subset)")
    gen.add_argument("--max-new-tokens", type=_positive, default=256)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--system", help="system prompt (default: the chat format's own)")

    judge = sub.add_parser("judge", help="pairwise LLM-as-judge of two answer files")
    judge.add_argument("--a", required=True, help="answers JSONL of configuration A")
    judge.add_argument("--b", required=True, help="answers JSONL of configuration B")
    source = judge.add_mutually_exclusive_group(required=True)
    source.add_argument("--judge", help="local judge model spec")
    source.add_argument("--judge-url", help="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    judge.add_argument("--judge-model", default="gpt-4o", help="model name sent to --judge-url")
    judge.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV,
                       help=f"environment variable holding the endpoint's API key (default {DEFAULT_API_KEY_ENV})")
    judge.add_argument("--via-worker", action="store_true", help="run the local judge in the shared worker")
    judge.add_argument("--free", action="store_true",
                       help="let a local judge write its verdict freely (default: primed scoring, see docs/eval.md)")
    judge.add_argument("--limit", type=_positive, help="only the first N pairs")
    judge.add_argument("--out-dir", default="eval_out/judge", help="judgments, report and chart go here")
    judge.add_argument("--no-progress", action="store_true")

    he = sub.add_parser("humaneval", help="HumanEval pass@k in a sandbox")
    _model_options(he)
    he.add_argument("--limit", type=_positive, help="only the first N problems")
    he.add_argument("--samples", type=_positive, default=1, help="samples per problem (pass@k for k <= samples)")
    he.add_argument("--raw", action="store_true", help="plain completion of the prompt (base models)")
    he.add_argument("--max-new-tokens", type=_positive, default=256)
    he.add_argument("--out-dir", default="eval_out/humaneval", help="results JSONL and report go here")
    he.add_argument(UNSAFE_FLAG, dest="unsafe", action="store_true",
                    help="run the model's code even where no sandbox (bubblewrap) is available: only "
                         "resource limits and an audit hook then stand between it and this machine")

    plots = sub.add_parser("plots", help="run the plot answers headless and count figures")
    plots.add_argument("--answers", required=True, help="answers JSONL from `starchat eval generate`")
    plots.add_argument("--category", default="plot")
    plots.add_argument("--out-dir", default="eval_out/plots", help="PNGs and report go here")
    plots.add_argument(UNSAFE_FLAG, dest="unsafe", action="store_true",
                       help="run the answers' code even where no sandbox (bubblewrap) is available")
    lm = sub.add_parser("lm-eval", help="EleutherAI lm-evaluation-harness tasks (ours: starchat_python_mc)")
    lm.add_argument("--model", default="default", help="model spec: default, a folder, a .gguf file or a HF id")
    lm.add_argument("--tasks", required=True,
                    help="comma-separated lm-eval task names, e.g. starchat_python_mc or arc_easy,hellaswag")
    lm.add_argument("--limit", type=_positive, help="only the first N documents of each task")
    lm.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    lm.add_argument("--engine", choices=("auto", "hf", "starchat"), default="auto",
                    help="auto: lm-eval's hf class for folders/hub ids, our engine for GGUF specs")
    lm.add_argument("--batch-size", type=_positive, default=1, help="batch size of the hf class")
    lm.add_argument("--include-path", action="append", default=[], help="another folder of task YAMLs")
    lm.add_argument("--out-dir", default="eval_out/lm_eval", help="results.json and per-sample rows go here")

    from model.prompt.fim import DEFAULT_CONTEXT_TOKENS
    from training.evaluation.repo_eval import POSITIONS
    from training.repo.walk import DEFAULT_SEED, MAX_FILE_BYTES

    repo = sub.add_parser("repo", help="completing a repository's held-out files (the split `starchat adapt` uses)")
    repo.add_argument("repo", help="a git work tree or a folder of code (never written to)")
    repo.add_argument("--model", default="default", help="model spec, e.g. default or default+runs/myrepo")
    repo.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the split's seed (as given to adapt)")
    repo.add_argument("--positions", type=_positive, default=POSITIONS, help="held-out positions to score")
    repo.add_argument("--context-tokens", type=_positive, default=DEFAULT_CONTEXT_TOKENS,
                      help="prompt tokens per position, as the editor's starchat.completion.contextTokens "
                           f"(default {DEFAULT_CONTEXT_TOKENS})")
    repo.add_argument("--max-file-kb", type=_positive, default=MAX_FILE_BYTES // 1024,
                      help="skip files larger than this (as given to adapt)")
    repo.add_argument("--adapter-scale", type=_adapter_scale, metavar="X",
                      help="how much of a run-time adapter (BASE+DIR) each completion applies, as the editor's "
                           "starchat.completion.adapterScale (0: the base alone; default: the completion scale "
                           "the adapter carries, which starchat adapt writes, else 1)")
    repo.add_argument("--json", action="store_true", help="(the JSON line is always printed; kept for scripts)")
    repo.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return parser


def cmd_repo(args) -> dict:
    from model.runtime.spec import ModelSpec
    from model.serving.client import WorkerClient
    from training.evaluation.repo_eval import positions, score
    from training.repo.walk import scan, split

    spec = ModelSpec.parse(args.model)
    if args.adapter_scale is not None and not spec.adapter:
        raise ValueError(f"--adapter-scale needs a model with an adapter (BASE+DIR), not {spec}.")
    found = scan(args.repo, max_file_bytes=args.max_file_kb * 1024)
    _, held = split(found.files, seed=args.seed)
    points = positions(held, args.positions, seed=args.seed)
    log.info("%s: %d held-out files, %d positions", found.root, len(held), len(points))
    with WorkerClient(spec) as client:
        info = client.ready_info()
        fim = info.get("fim", "none") != "none"
        result = score(client, points, fim=fim, context_tokens=args.context_tokens, adapter_scale=args.adapter_scale,
                       progress=None if args.no_progress else _positions_progress)
    # the scale applied: as given, else the adapter's own (None: no adapter)
    scale = args.adapter_scale if args.adapter_scale is not None else info.get("adapter_completion_scale")
    result.update(model=str(spec), engine=info.get("engine"), repo=str(found.root), heldout_files=len(held),
                  seed=args.seed, adapter_scale=scale)
    return result


def _positions_progress(k: int, n: int) -> None:
    if k % 50 == 0 or k == n:
        print(f"{k}/{n} positions", file=sys.stderr, flush=True)


def cmd_lm_eval(args) -> dict:
    from training.evaluation.lm_harness import run_lm_eval

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks is empty; give one or more task names, e.g. starchat_python_mc.")
    start = time.monotonic()
    result = run_lm_eval(args.model, tasks, limit=args.limit, engine=args.engine, batch_size=args.batch_size,
                         num_fewshot=args.num_fewshot, include_path=args.include_path)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = result.pop("samples")
    with (out_dir / "samples.jsonl").open("w", encoding="utf-8") as f:
        for task, rows in samples.items():
            for row in rows:
                f.write(json.dumps({"task": task, "doc_id": row.get("doc_id"), "target": row.get("target"),
                                    "filtered_resps": row.get("filtered_resps"),
                                    **{k: v for k, v in row.items() if k in ("acc", "acc_norm", "exact_match")}},
                                   default=str) + "\n")
    result.update(wall_s=round(time.monotonic() - start, 1), out_dir=str(out_dir))
    (out_dir / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def cmd_generate(args) -> dict:
    from training.evaluation.backends import make_backend
    from training.evaluation.generate import generate_answers
    from training.evaluation.prompts import DEFAULT_PROMPTS, load_prompts

    prompts = load_prompts(args.prompts or DEFAULT_PROMPTS, limit=args.limit, category=args.category,
                           every=args.every)
    backend = make_backend(args.model, via_worker=args.via_worker, chat_mode=args.chat_format)
    params = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    start = time.monotonic()
    rows = generate_answers(backend, prompts, args.out, params, system=args.system,
                            progress=not args.no_progress)
    return {"answers": len(rows), "out": str(args.out), "model": backend.spec,
            "chat_format": backend.chat_mode, "wall_s": round(time.monotonic() - start, 1)}


def cmd_judge(args) -> dict:
    from training.evaluation.backends import OpenAIBackend, make_backend
    from training.evaluation.judge import judge_pairs, pair_answers, summarize
    from training.evaluation.report import judge_chart, judge_markdown

    pairs = pair_answers(args.a, args.b)[: args.limit]
    if args.judge_url:
        judge = OpenAIBackend(args.judge_url, args.judge_model, api_key_env=args.api_key_env)
    else:
        judge = make_backend(args.judge, via_worker=args.via_worker)
    out_dir = Path(args.out_dir)
    start = time.monotonic()
    # Small local judges need their reply started for them; remote and worker judges cannot.
    primed = bool(args.judge) and not args.via_worker and not args.free
    try:
        judgments = judge_pairs(judge, pairs, out_dir / "judgments.jsonl", primed=primed,
                                progress=not args.no_progress)
    finally:
        if hasattr(judge, "close"):  # a worker or server connection
            judge.close()
    summary = summarize(judgments)
    a_name, b_name = _config_name(pairs[0][0], args.a), _config_name(pairs[0][1], args.b)
    (out_dir / "judge_report.md").write_text(judge_markdown(summary, a_name, b_name, f"{judge.spec}, {'primed' if primed else 'free'} scoring"), encoding="utf-8")
    judge_chart(summary, out_dir / "judge_chart.png", a_name, b_name)
    summary.update(judge=judge.spec, judge_mode="primed" if primed else "free", a=a_name, b=b_name,
                   out_dir=str(out_dir),
                   wall_s=round(time.monotonic() - start, 1))
    return summary


def _config_name(row: dict, path: str) -> str:
    settings = row.get("settings") or {}
    if "model" in settings:
        return f"{settings['model']} ({settings.get('chat_format', '?')})"
    return Path(path).stem


def cmd_humaneval(args) -> dict:
    from training.evaluation.backends import make_backend
    from training.evaluation.humaneval import run_humaneval, score
    from training.evaluation.report import humaneval_markdown

    if args.raw and args.via_worker:
        raise BackendError("--raw needs the model in this process; drop --via-worker.")
    require_isolation(args.unsafe)  # before any generation: refuse at once where nothing isolates
    backend = make_backend(args.model, via_worker=args.via_worker, chat_mode=args.chat_format)
    out_dir = Path(args.out_dir)
    start = time.monotonic()
    rows = run_humaneval(backend, out_dir / "results.jsonl", limit=args.limit, samples=args.samples,
                         raw=args.raw, max_new_tokens=args.max_new_tokens, progress=not args.no_progress,
                         unsafe=args.unsafe)
    ks = tuple(k for k in (1, 5, 10, 100) if k <= args.samples) or (1,)
    result = score(rows, ks)
    result.update(model=backend.spec, chat_format="raw" if args.raw else backend.chat_mode,
                  wall_s=round(time.monotonic() - start, 1),
                  generate_s=round(sum(r["generate_s"] for r in rows), 1), out_dir=str(out_dir))
    (out_dir / "report.md").write_text(humaneval_markdown(result), encoding="utf-8")
    return result


def cmd_plots(args) -> dict:
    from training.evaluation.plots import run_plots
    from training.evaluation.prompts import read_jsonl
    from training.evaluation.report import plots_markdown

    require_isolation(args.unsafe)
    answers = read_jsonl(args.answers, what="answers file")
    summary = run_plots(answers, args.out_dir, category=args.category, unsafe=args.unsafe)
    (Path(args.out_dir) / "report.md").write_text(plots_markdown(summary), encoding="utf-8")
    return {k: v for k, v in summary.items() if k != "rows"} | {"out_dir": args.out_dir}


COMMANDS = {"generate": cmd_generate, "judge": cmd_judge, "humaneval": cmd_humaneval, "plots": cmd_plots,
            "lm-eval": cmd_lm_eval, "repo": cmd_repo}


def main(argv: list[str] | None = None) -> int:
    """Entry of `starchat eval`; returns the exit code (2 for bad input)."""
    from model.runtime.spec import ModelSpecError
    from model.serving.client import WorkerError
    from training.evaluation.prompts import EvalInputError

    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = COMMANDS[args.command](args)
    except (EvalInputError, BackendError, ModelSpecError, WorkerError, ValueError, SandboxUnavailable) as exc:
        print(f"starchat eval {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"starchat eval {args.command}: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
