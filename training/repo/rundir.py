"""The ``--out`` folder of ``starchat adapt``: what it holds, resuming, and replacing safely.

    DIR/adapter.gguf     the LoRA adapter for llama.cpp (what ``BASE+DIR`` serves)
    DIR/adapter/         the same adapter as peft wrote it (for transformers / further training)
    DIR/model.gguf       with ``--merge``: the adapter folded into the base, for chat
    DIR/completion.gguf  with ``--merge``: the same at the completion strength, for completions
    DIR/model/, DIR/model.gguf   instead, after full fine-tuning (``--full``)
    DIR/adapt.json       the run's record: repository, base, split, training, scores
    DIR/.work/           a run in progress: run.json (what it is), checkpoints, new outputs

A run works in ``.work`` and moves its outputs into place only when they are complete
(``publish``: each file by an atomic rename), so an earlier adapter stays in use until then,
and a run stopped by Ctrl-C, a full disk or a crash leaves the earlier one untouched. The
same command again finds ``.work/run.json`` equal to its own and resumes; a different
command (other repository, base, seed or recipe) starts afresh. A folder holding anything
else is refused rather than written into, and so is a folder inside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

RECORD = "adapt.json"
WORK = ".work"
OURS = {RECORD, WORK, "adapter.gguf", "adapter", "model", "model.gguf", "completion.gguf", "base.gguf",
        "train_log.jsonl"}
#: A run's outputs; one an earlier run left that this run did not write (``--merge`` or
#: ``--full`` then, not now) is removed by ``publish`` once this run's are in place: it would
#: be served as if it came from this run.
OUTPUTS = ("adapter.gguf", "adapter", "model", "model.gguf", "completion.gguf", "base.gguf")


class OutDirError(ValueError):
    """The --out folder cannot be used; the message is one sentence."""


def check_out_dir(out: Path, repo: Path) -> str:
    """Refuse an unusable ``out``; returns what it holds: ``new``, ``earlier run`` or ``resumable``."""
    out, repo = out.expanduser().resolve(), repo.resolve()
    if out == repo or out.is_relative_to(repo):
        raise OutDirError(f"--out {out} is inside the repository {repo}; adapt never writes there: "
                          "choose a folder outside it.")
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out} is a file, not a folder.")
    if not out.exists():
        return "new"
    names = {p.name for p in out.iterdir()}
    strangers = sorted(names - OURS)
    if strangers:
        raise OutDirError(f"--out {out} holds other files ({strangers[0]}{', ...' if len(strangers) > 1 else ''}); "
                          "give a new or empty folder, or one an earlier `starchat adapt` wrote.")
    if (out / WORK / "run.json").is_file():
        return "resumable"
    return "earlier run" if names else "new"


def prepare_work(out: Path, fingerprint: dict) -> tuple[Path, bool]:
    """The work folder for a run described by ``fingerprint``; True when it resumes one."""
    work = out / WORK
    stamp = work / "run.json"
    if stamp.is_file():
        try:
            same = json.loads(stamp.read_text(encoding="utf-8")) == fingerprint
        except (OSError, ValueError):
            same = False
        if same:
            return work, True
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(stamp, fingerprint)
    return work, False


def wait_for_work(out: Path, fingerprint: dict, timeout_s: float = 600) -> Path:
    """The work folder the main process of a multi-process run prepares for ``fingerprint``."""
    stamp = out / WORK / "run.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == fingerprint:
                return out / WORK
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise OutDirError(f"The main process did not prepare {out / WORK} within {timeout_s:.0f} s.")


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a temp file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def publish(work: Path, out: Path, names: list[str]) -> None:
    """Move this run's finished outputs ``names`` from ``work`` into ``out``, each replacing its
    earlier version by a rename (a folder: the old one is renamed aside first, then removed);
    then remove the ``OUTPUTS`` an earlier run left that this run did not write."""
    for name in names:
        new, old = work / name, out / name
        if new.is_dir():
            aside = out / f".{name}.old-{time.monotonic_ns()}"
            if old.exists():
                os.replace(old, aside)
            os.replace(new, old)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(new, old)
    for name in set(OUTPUTS) - set(names):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def finish(work: Path) -> None:
    """The run is complete: its work folder (checkpoints) goes."""
    shutil.rmtree(work, ignore_errors=True)
