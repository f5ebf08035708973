"""Multi-process helpers: DeepSpeed's comm over the launcher's process group, ZeRO-3 report.

On a CPU machine ``TrainingArguments(use_cpu=True)`` lets accelerate open the process group
(gloo; oneCCL when ``oneccl_bindings_for_pytorch`` is installed) but not DeepSpeed's own comm
layer, so ``deepspeed.zero.Init`` at model load would believe it is alone (world size 1)
and refuse the batch size. ``init_deepspeed_comm`` wraps the open group before loading.

``write_partition_report`` records, from the engine's parameters, how many elements each
rank holds (the ZeRO-3 partition) against the full model, plus a checksum of every gathered
parameter, as ``zero_partition.json`` (rank 0 writes it; the other ranks write nothing).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPORT = "zero_partition.json"


def init_deepspeed_comm(training_args: Any) -> str | None:
    """Attach DeepSpeed's comm to the process group the launcher opened; returns its backend."""
    import torch.distributed as dist

    if not training_args.deepspeed:
        return None
    _ = training_args.device  # accelerate opens the process group here (torchrun/accelerate env)
    if not (dist.is_available() and dist.is_initialized()):
        return None  # one process: the Trainer initialises DeepSpeed itself
    import deepspeed

    backend = dist.get_backend()
    deepspeed.init_distributed(dist_backend=backend)
    log.info("DeepSpeed comm over torch.distributed %s, %d ranks", backend, dist.get_world_size())
    return str(backend)


def _partition_counts(model: Any) -> dict[str, int]:
    full = local = 0
    for p in model.parameters():
        if hasattr(p, "ds_numel"):  # a ZeRO-3 parameter: ds_tensor is this rank's partition
            full += int(p.ds_numel)
            local += int(p.ds_tensor.numel())
        else:
            full += p.numel()
            local += p.numel()
    return {"full_numel": full, "local_numel": local}


def _checksums(model: Any) -> dict[str, list[float]]:
    """Sum and sum of squares of every parameter, gathered from the shards (fp64)."""
    import contextlib

    import torch

    sums: dict[str, list[float]] = {}
    for name, p in model.named_parameters():
        gather: Any = contextlib.nullcontext()
        if hasattr(p, "ds_numel"):
            import deepspeed

            gather = deepspeed.zero.GatheredParameters([p], modifier_rank=None)
        with gather, torch.no_grad():
            t = p.detach().double()
            sums[name] = [float(t.sum()), float((t * t).sum()), *map(int, t.shape)]
    return sums


def write_partition_report(trainer: Any, output_dir: str) -> dict | None:
    """Per-rank partition sizes and gathered checksums -> ``OUTPUT/zero_partition.json`` (rank 0)."""
    import torch.distributed as dist

    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    model = getattr(model, "module", model)  # the DeepSpeed engine wraps the model
    counts = _partition_counts(model)
    sums = _checksums(model)  # collective under ZeRO-3: every rank takes part
    distributed = dist.is_available() and dist.is_initialized()
    ranks: list[Any] = [counts]
    if distributed:
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, {"rank": dist.get_rank(), **counts})
    if not trainer.is_world_process_zero():
        return None
    report = {
        "world_size": len(ranks),
        "backend": str(dist.get_backend()) if distributed else None,
        "ranks": ranks,
        "checksums": sums,
    }
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / REPORT).write_text(json.dumps(report, indent=1), encoding="utf-8")
    for r in ranks:
        log.info("rank %s holds %d of %d parameters (%.1f%%)", r.get("rank", 0), r["local_numel"],
                 r["full_numel"], 100 * r["local_numel"] / max(1, r["full_numel"]))
    return report
