"""EleutherAI's lm-evaluation-harness on our models: ``starchat eval lm-eval``.

Model folders (and hub ids) go through lm-eval's own Hugging Face class (``hf`` with
``pretrained=FOLDER``). Other specs (``default``, ``.gguf`` files) go through ``EngineLM``:
lm-eval's ``LM`` interface on our own engine, in this process. The model worker's protocol
streams text and has no per-token log-probabilities, which ``loglikelihood`` needs, so the
adapter runs the same runner the worker runs (``model.runtime.loading.load_model`` -> ``runner``),
reading the logits after each token from its KV-cached forward pass.

The project's own offline task, ``starchat_python_mc`` (60 Python-semantics questions written
for this project, ``training/data/python_mc.jsonl``), is always on the include path.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from model.runtime.spec import ModelSpec

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = ROOT / "lm_eval_tasks"
DATA_DIR = ROOT / "data"
OUR_TASKS = ("starchat_python_mc",)


class EngineLM:  # lm-eval's LM base class is mixed in by make_engine_lm (imported lazily)
    """loglikelihood, loglikelihood_rolling and generate_until on our torch runner."""

    def __init__(self, spec: ModelSpec | str):
        from model.runtime.engine import Engine
        from model.runtime.loading import load_model

        self.loaded = load_model(spec)
        self.engine = Engine(self.loaded)
        self.runner = self.loaded.runner
        self.tok = self.loaded.tokenizer
        self.window = int(self.loaded.context_window)
        # What an empty context is conditioned on: bos, else eos (lm-eval's own choice).
        bos, eos = getattr(self.tok, "bos_token_id", None), getattr(self.tok, "eos_token_id", None)
        self.prefix_id = int(bos if bos is not None else eos if eos is not None else 0)
        self._ctx_key: tuple[int, ...] | None = None
        self._ctx_state: tuple[Any, Any] | None = None

    # -- token helpers ------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # Trailing spaces belong to the continuation (as lm-eval's TemplateLM does), and the
        # pair is tokenized whole, so a merge across the boundary is not split by hand.
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation, context = context[-spaces:] + continuation, context[:-spaces]
        whole = self._encode(context + continuation)
        ctx = self._encode(context)
        cont = whole[len(ctx):] if whole[: len(ctx)] == ctx else self._encode(continuation)
        return (ctx or [self.prefix_id]), cont

    def _logprobs(self, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
        import torch

        total = len(ctx) + len(cont)
        if total > self.window:  # keep the end: the continuation and the nearest context
            ctx = ctx[total - self.window:]
        key = tuple(ctx)
        with torch.inference_mode():
            if key != self._ctx_key:  # multiple choice: one prefill per question, not per choice
                cache = self.runner.new_cache()
                logits = self.runner.prefill(ctx, cache)
                self._ctx_key, self._ctx_state = key, (cache, logits)
            assert self._ctx_state is not None
            cache = copy.deepcopy(self._ctx_state[0])
            logits = self._ctx_state[1]
            score, greedy = 0.0, True
            for i, token in enumerate(cont):
                logp = torch.log_softmax(logits.float(), dim=-1)
                score += float(logp[token])
                greedy = greedy and int(logp.argmax()) == token
                if i + 1 < len(cont):
                    logits = self.runner.prefill([token], cache)
        return score, greedy

    # -- the LM interface ---------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [self._logprobs(*self._split(*r.args)) for r in requests]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in disjoint windows; each window starts fresh after one
        token of the previous (the first after the prefix token)."""
        results = []
        for r in requests:
            ids = self._encode(r.args[0])
            total, pos = 0.0, 0
            while pos < len(ids):
                ctx = [ids[pos - 1]] if pos else [self.prefix_id]
                chunk = ids[pos: pos + self.window - 1]
                total += self._logprobs(ctx, chunk)[0]
                pos += len(chunk)
            results.append(total)
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            stops = [u for u in until if u]
            params = {"max_new_tokens": max_new, "temperature": float(kwargs.get("temperature", 0.0) or 0.0),
                      "stop": stops}
            ids = self._encode(context) or [self.prefix_id]
            ids = ids[-max(1, self.window - max_new):]
            stream = self.engine.generate(ids, params)
            for _ in stream:
                pass
            text = stream.text
            for stop in stops:
                text = text.split(stop)[0]
            out.append(text)
        return out


def make_engine_lm(spec: ModelSpec | str) -> Any:
    """An ``lm_eval.api.model.LM`` instance running ``spec`` on our engine."""
    from lm_eval.api.model import LM

    class StarChatEngineLM(EngineLM, LM):
        def __init__(self, spec: ModelSpec | str):
            LM.__init__(self)
            EngineLM.__init__(self, spec)

    return StarChatEngineLM(spec)


def _task_folder(work: Path) -> Path:
    """Our task YAMLs with the data file's path made absolute (lm-eval reads it from the cwd)."""
    folder = work / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for yaml_file in TASKS_DIR.glob("*.yaml"):
        text = yaml_file.read_text(encoding="utf-8")
        text = text.replace("training/data/", str(DATA_DIR) + "/")
        (folder / yaml_file.name).write_text(text, encoding="utf-8")
    return folder


def uses_hf_class(spec: ModelSpec) -> bool:
    return spec.kind in ("folder", "hub")


def run_lm_eval(spec: ModelSpec | str, tasks: list[str], *, limit: float | None = None, engine: str = "auto",
                batch_size: int = 1, num_fewshot: int | None = None,
                include_path: list[str] | None = None) -> dict:
    """Run ``tasks`` on ``spec``; returns {"results", "n_samples", "model", "engine", "samples"}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from model.runtime.loading import local_folder

    spec = ModelSpec.parse(spec)
    if engine == "auto":
        engine = "hf" if uses_hf_class(spec) else "starchat"
    with tempfile.TemporaryDirectory(prefix="starchat-lm-eval-") as work:
        manager = TaskManager(include_path=[str(_task_folder(Path(work))), *(include_path or [])])
        unknown = [t for t in tasks if not manager.match_tasks([t])]
        if unknown:
            raise ValueError(f"Unknown lm-eval task {unknown[0]!r}; ours: {', '.join(OUR_TASKS)}.")
        if engine == "hf":
            folder = local_folder(spec)
            model: Any = "hf"
            model_args: Any = {"pretrained": folder, "device": "cpu", "dtype": "float32"}
        else:
            model, model_args = make_engine_lm(spec), None
        results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(tasks),
                                          limit=limit, batch_size=batch_size, num_fewshot=num_fewshot,
                                          task_manager=manager, log_samples=True, bootstrap_iters=0)
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results.")
    metrics = {task: {k: v for k, v in values.items() if _is_number(v)}
               for task, values in results["results"].items()}
    n_samples = {task: len(rows) for task, rows in (results.get("samples") or {}).items()}
    return {"model": str(spec), "engine": engine, "results": metrics, "n_samples": n_samples,
            "samples": results.get("samples") or {}}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
