"""Turn a model spec (``model.runtime.spec.ModelSpec``) into a loaded model and tokenizer.

In the worker, GGUF specs (``default`` among them) run on llama.cpp as they are
(``ModelSpec.engine`` says which engine serves a spec; ``model.runtime.llamacpp_engine``). This module
loads everything for the torch path: folders, hub ids, ``@int4`` specs, and GGUF files where
the ``xllamacpp`` wheel is missing or ``STARCHAT_ENGINE=torch`` is set. There, GGUF files are
de-quantized by transformers, which takes ~15 s for the default model; the result is saved
once as safetensors under the cache dir, keyed by the file's identity, so later loads take
about a second.

Plain Llama checkpoints on the CPU (the default model among them) are run by our own
forward pass (``model.runtime.llama``) with a tokenizer that needs no transformers
(``model.prompt.tokenizer``), so loading them imports neither; everything else goes through
transformers (``model.runtime.hf_runner``). ``LoadedModel.runner`` is what ``Engine`` drives.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import file_cache_folder, publish_folder
from .runner import Runner, eos_id_set
from .spec import ModelSpec, ModelSpecError

log = logging.getLogger(__name__)

_CACHE_FORMAT = "1"
RUNNERS = ("auto", "lean", "transformers")
ENGINES = ("llama.cpp", "torch")


@dataclass
class LoadedModel:
    model: Any  # model.runtime.llama.LlamaModel, or a transformers model
    tokenizer: Any
    spec: ModelSpec
    name: str
    device: str
    context_window: int
    runner: Runner  # what Engine drives: the LlamaModel itself or an HFRunner
    runner_kind: str  # "lean" | "transformers"
    quantize: str = "none"


def _gguf_cache_folder(gguf: Path) -> Path:
    return file_cache_folder(gguf, "models", _CACHE_FORMAT)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantize a GGUF file once and save it as safetensors (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to safetensors in %s (one time, ~15 s)", gguf.name, target)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are plain float tensors now; drop the GGUF quantizer so the copy is a
    # normal (and trainable) checkpoint.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with publish_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "starchat-source.txt").write_text(f"{gguf.resolve()}\n")


def local_folder(spec: ModelSpec | str) -> str:
    """The folder (or hub id) transformers should load for ``spec``, converting GGUF once."""
    spec = ModelSpec.parse(spec)
    if spec.kind != "gguf":
        return spec.location
    target = _gguf_cache_folder(Path(spec.location))
    if not (target / "config.json").is_file():
        _convert_gguf(Path(spec.location), target)
    return str(target)


def _hub_kwargs(source: ModelSpec) -> dict[str, Any]:
    if source.kind != "hub":
        return {}
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    kwargs: dict[str, Any] = {"local_files_only": offline}
    # Read at call time: huggingface_hub reads HF_HUB_CACHE only once, at import.
    if os.environ.get("HF_HUB_CACHE"):
        kwargs["cache_dir"] = os.environ["HF_HUB_CACHE"]
    return kwargs


def _hub_error(source: ModelSpec, exc: Exception) -> ModelSpecError:
    return ModelSpecError(
        f"Could not load {source.location}: it is not in the local Hugging Face cache and "
        f"could not be downloaded ({type(exc).__name__})."
    )


def load_tokenizer(spec: ModelSpec | str = "default", *, trust_remote_code: bool = False) -> Any:
    """Load only the tokenizer for ``spec`` (converting a GGUF file on first use)."""
    from transformers import AutoTokenizer

    spec = ModelSpec.parse(spec)
    folder = local_folder(spec)
    try:
        return AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, **_hub_kwargs(spec)
        )
    except OSError as exc:
        raise _hub_error(spec, exc) from exc


def pick_device(device: str | None = None) -> str:
    """``cuda`` when a GPU is present, else ``cpu``; an explicit choice wins."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: Any = None) -> Any:
    """bf16 on GPUs that support it (fp16 otherwise), fp32 on the CPU."""
    import torch

    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(
    spec: ModelSpec | str = "default",
    *,
    device: str | None = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    runner: str = "auto",
    quantize: str = "none",
) -> LoadedModel:
    """Load model and tokenizer for ``spec`` on the best device, ready for generation.

    ``runner="auto"`` takes our own forward pass (``model.runtime.llama``, no transformers import,
    ~1.4x faster decode on CPU) for plain Llama checkpoints on the CPU, and transformers
    for everything else; ``lean`` insists on the former, ``transformers`` on the latter.
    ``quantize="int4"`` needs the lean runner (see ``model.runtime.llama.Linear``).
    """
    if runner not in RUNNERS:
        raise ModelSpecError(f"Unknown runner {runner!r}: use {', '.join(RUNNERS)}.")
    from .llama import QUANTIZE_MODES

    spec = ModelSpec.parse(spec)
    if spec.adapter:
        raise ModelSpecError(f"{spec.display_name} has an adapter, which only llama.cpp serves (the worker "
                             "runs such specs there).")
    quantize = spec.quantize if spec.quantize != "none" else quantize

    if quantize not in QUANTIZE_MODES:
        raise ModelSpecError(f"Unknown quantize mode {quantize!r}: use {' or '.join(QUANTIZE_MODES)}.")
    folder = local_folder(spec)
    if spec.kind == "folder":
        from .model_files import check_folder

        check_folder(folder)  # one sentence naming a missing or malformed file
    device = pick_device(device)
    if runner != "transformers" and spec.kind != "hub":
        reason = _lean_refusal(folder, device, trust_remote_code)
        if reason is None:
            return _load_lean(spec, folder, device, dtype, quantize)
        if runner == "lean" or quantize != "none":
            raise ModelSpecError(f"{spec.name} cannot use our own runner: {reason}.")
    elif runner == "lean" or quantize != "none":
        raise ModelSpecError(f"{spec.name} cannot use our own runner: it must be a local folder or GGUF file.")
    return _load_transformers(spec, folder, device, dtype, trust_remote_code)


def _lean_refusal(folder: str, device: str, trust_remote_code: bool) -> str | None:
    """Why ``model.runtime.llama`` cannot run this folder, or None when it can."""
    import json

    from .llama import supports

    if trust_remote_code:
        return "the model asks for its own code (trust_remote_code)"
    if not device.startswith("cpu"):
        return "it runs on the CPU only (transformers is used on GPUs)"
    config = json.loads((Path(folder) / "config.json").read_text())
    if not supports(config):
        return f"it is not a plain Llama model (model_type {config.get('model_type')!r})"
    if not any(Path(folder).glob("*.safetensors")):
        return "its weights are not in safetensors files"
    return None


def _generation_eos(folder: str) -> set[int]:
    import json

    path = Path(folder) / "generation_config.json"
    return eos_id_set(json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None)


def _load_lean(spec: ModelSpec, folder: str, device: str, dtype: Any, quantize: str) -> LoadedModel:
    from ..prompt.tokenizer import can_load_lite, load_lite_tokenizer
    from . import llama

    model = llama.load(folder, device=device, dtype=pick_dtype(device, dtype), quantize=quantize)
    model.eos_ids = _generation_eos(folder)
    # Tokenizers saved in the standard tokenizer.json form need no transformers; others
    # (model-specific classes that transformers rebuilds) are loaded by transformers.
    tokenizer = load_lite_tokenizer(folder) if can_load_lite(folder) else load_tokenizer(spec)
    name = spec.name if quantize == "none" else f"{spec.name}@{quantize}"
    return LoadedModel(model, tokenizer, spec, name, device, _window(model.shape.context_window, tokenizer),
                       runner=model, runner_kind="lean", quantize=quantize)


def _window(configured: int, tokenizer: Any) -> int:
    if configured and configured <= 1_000_000:
        return configured
    return int(min(tokenizer.model_max_length, 1_000_000)) or 2048


def _load_transformers(spec: ModelSpec, folder: str, device: str, dtype: Any,
                       trust_remote_code: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    from .hf_runner import HFRunner

    torch_dtype = pick_dtype(device, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    kwargs.update(_hub_kwargs(spec))
    if device == "cuda":
        # accelerate places the layers over every GPU (and the CPU) for models too big for one.
        kwargs["device_map"] = "auto"
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise _hub_error(spec, exc) from exc
    if device != "cuda":
        model.to(device)
    model.eval()
    window = _window(int(getattr(model.config, "max_position_embeddings", 0) or 0), tokenizer)
    return LoadedModel(model, tokenizer, spec, spec.name, device, window,
                       runner=HFRunner(model), runner_kind="transformers")
