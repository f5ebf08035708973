"""Training logs as JSONL and a loss-curve PNG (main process only)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
PLOT_NAME = "loss_curve.png"


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log (loss, learning_rate, grad_norm, …) as one JSON line."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOG_NAME
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
        self.started = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch,
                  "elapsed_s": round(time.monotonic() - self.started, 2), **logs}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def read_log(output_dir: str | Path) -> list[dict]:
    """The JSONL log records of a run folder."""
    path = Path(output_dir) / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(output_dir: str | Path) -> Path | None:
    """Draw loss and learning rate against step into ``loss_curve.png``; None if nothing logged."""
    records = [r for r in read_log(output_dir) if "loss" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in records], color="tab:blue", label="train loss")
    evals = [r for r in read_log(output_dir) if "eval_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", color="tab:orange",
                label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    if any("learning_rate" in r for r in records):
        lr_axis = ax.twinx()
        lr_axis.plot(steps, [r.get("learning_rate", float("nan")) for r in records], color="tab:gray",
                     linestyle="--", label="learning rate")
        lr_axis.set_ylabel("learning rate")
        lr_axis.legend(loc="upper right")
    fig.tight_layout()
    path = Path(output_dir) / PLOT_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
