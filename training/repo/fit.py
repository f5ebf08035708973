"""Training an adapter (LoRA, the default) or the whole model on repository examples.

``fit`` runs transformers' ``Trainer`` over packed examples (``training.packing``: rows of
several examples, positions restarting, no attention across them) with the recipe's
settings (``training/configs/adapt_cpu.yaml``, ``adapt_gpu.yaml``; the same keys as
``starchat train``). It is built to be stopped:

- checkpoints go to ``work/checkpoints`` every ``save_steps`` and when the run stops early;
  a LoRA checkpoint is a few MB;
- Ctrl-C (SIGINT) or SIGTERM ends the current step, saves a checkpoint and raises
  ``Interrupted``;
- ``max_minutes`` fits the run to the time: after the first steps are timed, a recipe whose
  steps do not all fit is shortened to the steps that do, and its learning-rate schedule
  re-aimed at the new last step (a cosine still decays to its end rather than being cut
  off near its middle); should the steps slow down later, the time limit still stops the
  run at the next step (the adapter saved is usable, trained on fewer steps); under
  several ranks (torchrun, DeepSpeed) the ranks agree on both -- the fewest steps that fit
  on any rank, and a stop on one rank (its clock, a signal) stops all at the same step;
- a run whose ``work`` folder holds checkpoints resumes from the newest (optimizer, schedule
  and data order included);
- the progress bar (steps, loss, ETA) goes to stderr.

The result is saved to ``work/adapter`` (peft's adapter folder) for LoRA, or ``work/model``
(a full model folder) for full fine-tuning. ``set_strength`` then sets how much of the
trained change the adapter applies (what ``merge`` and ``training.export.export_lora`` read).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training stopped early (Ctrl-C, SIGTERM or the time limit); a checkpoint was saved."""

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class FitResult:
    output: Path  # work/adapter or work/model
    steps: int
    train_s: float  # seconds of training in this run (a resumed run counts its own)
    final_loss: float | None
    resumed_from: int | None


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``folder`` that Trainer finished writing."""
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


TIMED_STEPS = 3  # steps timed (after the first, which allocates) before the run is fitted to the time
MARGIN = 0.95  # of the time left that the fitted steps may take


def refit_schedule(scheduler: Any, steps: int) -> bool:
    """Aim a transformers learning-rate schedule (a ``LambdaLR`` over ``partial(...,
    num_training_steps=N)``) at ``steps``, from the step it is at; False where the schedule
    has no end to move (constant)."""
    scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper, where there is one
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not lambdas or not all(isinstance(f, functools.partial) and "num_training_steps" in f.keywords
                              for f in lambdas):
        return False
    scheduler.lr_lambdas = [functools.partial(f.func, *f.args, **{**f.keywords, "num_training_steps": steps})
                            for f in lambdas]
    groups = scheduler.optimizer.param_groups
    for group, base, f in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * f(scheduler.last_epoch)  # the next step's rate, on the new schedule
    scheduler._last_lr = [group["lr"] for group in groups]
    return True


def across_ranks(value: float, op: str) -> float:
    """``value`` agreed by every rank (``op``: "min" or "max") when torch.distributed runs
    several; the value itself in a single process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.MAX)
    return tensor.item()


class _StopControl:
    """SIGINT/SIGTERM and the time limit become 'save a checkpoint and stop' at the next step;
    a time limit also shortens the run to the steps that fit (``fit_to_time``)."""

    # why a run stops, ordered so that the ranks agree on the largest (a max all-reduce)
    NONE, TIME_LIMIT, SIGNAL = 0, 1, 2

    def __init__(self, max_minutes: float | None):
        self.kind = self.NONE
        self.reason: str | None = None  # the stop in words, for the log and the user
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes else None
        self.fitted: tuple[int, int, float] | None = None  # (steps planned, steps that fit, s a step)
        self.bars: list[Any] = []  # transformers' progress bars, whose total follows the fit
        self._marks: list[float] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopControl:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.kind != self.NONE:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.kind, self.reason = self.SIGNAL, "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        log.warning("%s: saving a checkpoint after this step (press again to quit at once)", self.reason)

    def fit_to_time(self, state: Any, scheduler: Any) -> None:
        """At the end of each step: once TIMED_STEPS steps after the first are timed, shorten
        ``state.max_steps`` to the steps that fit before the deadline (on every rank: the
        fewest that fit on any) and re-aim the schedule."""
        if self.deadline is None or len(self._marks) > TIMED_STEPS:
            return
        now = time.monotonic()
        self._marks.append(now)
        if len(self._marks) <= TIMED_STEPS:
            return
        per_step = (now - self._marks[0]) / TIMED_STEPS
        fits = state.global_step + max(1, int(MARGIN * (self.deadline - now) / per_step))
        fits = int(across_ranks(min(fits, state.max_steps), "min"))
        if fits >= state.max_steps:
            return
        self.fitted = (state.max_steps, fits, per_step)
        log.warning("At %.1f s a step, %d of the %d steps fit in the time limit: training ends at step %d, "
                    "its learning-rate schedule with it.", per_step, fits, state.max_steps, fits)
        state.max_steps = fits
        refit_schedule(scheduler, fits)
        for bar in self.bars:
            if getattr(bar, "training_bar", None) is not None:
                bar.training_bar.total = fits
                bar.training_bar.refresh()

    def should_stop(self) -> bool:
        """At the end of each step: whether to save and stop now. Under several ranks every
        rank stops at the same step when any has a reason (a signal that reached one rank, a
        clock past the deadline on one), so none waits for the others in a collective."""
        if self.kind == self.NONE and self.deadline and time.monotonic() > self.deadline:
            self.kind, self.reason = self.TIME_LIMIT, "the time limit"
        own = self.kind
        agreed = int(across_ranks(own, "max"))
        if agreed > own:
            self.kind = agreed
            self.reason = "the time limit on another rank" if agreed == self.TIME_LIMIT else "a signal to another rank"
        return agreed != self.NONE  # (a signal that came after the ranks agreed counts at the next step, on all)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        control_self = self

        class StopCallback(TrainerCallback):
            def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
                control_self.fit_to_time(state, lr_scheduler)
                if control_self.should_stop():
                    control.should_save = True
                    control.should_training_stop = True
                return control

        return StopCallback()


def fit(folder: str, examples: list[dict], work: Path, argv: list[str], *, max_minutes: float | None = None,
        full: bool = False) -> FitResult:
    """Train on ``examples`` from the model in ``folder`` with the recipe ``argv``
    (``CONFIG.yaml [--key value ...]``, as ``starchat train`` takes it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, ProgressCallback, Trainer

    from training.config import parse_config
    from training.packing import PackedCollator, pack_examples
    from training.train import lora_targets, make_trainable

    model_args, data_args, lora_args, args = parse_config(
        [*argv, "--output_dir", str(work / "checkpoints"), "--use_lora", str(not full).lower()])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = make_trainable(AutoModelForCausalLM.from_pretrained(folder, **kwargs))
    model.config.use_cache = False
    if not full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
            task_type="CAUSAL_LM", **lora_targets(model, lora_args)))
    rows = pack_examples(examples, data_args.max_seq_length)
    resume = latest_checkpoint(work / "checkpoints")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with _StopControl(max_minutes) as stop:
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=PackedCollator(pad, pad_to_multiple_of=8),
                          processing_class=tokenizer, callbacks=[stop.callback()])
        stop.bars = [c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)]
        started = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):  # Trainer's log lines: stdout is the command's result
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        train_s = time.monotonic() - started
        step = trainer.state.global_step
        if stop.kind == stop.TIME_LIMIT:
            log.warning("The time limit ended training at step %d of %d; the adapter is trained on fewer steps.",
                        step, trainer.state.max_steps)
        elif stop.kind == stop.SIGNAL:
            checkpoint = latest_checkpoint(work / "checkpoints")
            raise Interrupted(f"Training stopped by {stop.reason} at step {step} of {trainer.state.max_steps}.",
                              step, checkpoint)
    output = work / ("model" if full else "adapter")
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if full:
        model.config.use_cache = True
    # (Trainer gathers ZeRO-3 partitions and writes from the main process only; for a peft
    # model it writes the adapter)
    trainer.save_model(str(output))
    if full and trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output))
    return FitResult(output, step, round(train_s, 1), losses[-1] if losses else None,
                     int(resume.name.rsplit("-", 1)[1]) if resume else None)


def set_strength(adapter: Path, strength: float) -> None:
    """Make the peft adapter in ``adapter`` apply ``strength`` times its trained change.

    A LoRA adds ``alpha / r * B A`` (``alpha / sqrt(r)`` with rsLoRA) to each adapted weight,
    so ``lora_alpha`` and every ``alpha_pattern`` value are multiplied by ``strength``: the
    merged model's weights are then base + strength x (trained - base) -- the interpolation
    WiSE-FT uses against forgetting -- and the adapter converted for llama.cpp applies the
    same. Call it once on an adapter just saved by ``fit`` (it scales what it finds).
    """
    import json

    from training.repo.rundir import write_json

    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["lora_alpha"] = config["lora_alpha"] * strength
    config["alpha_pattern"] = {k: v * strength for k, v in (config.get("alpha_pattern") or {}).items()}
    write_json(path, config)


def merge(folder: str, adapter: Path, output: Path) -> Path:
    """The base model in ``folder`` with the LoRA ``adapter`` folded into its weights (fp32,
    peft's ``merge_and_unload``), saved as a model folder at ``output`` with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(str(output), safe_serialization=True)
    AutoTokenizer.from_pretrained(folder).save_pretrained(str(output))
    return output
