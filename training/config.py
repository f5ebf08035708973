"""Training configuration: YAML recipe + ``--key value`` overrides -> typed dataclasses.

The recipe's keys are the fields of ``ModelArguments``, ``DataArguments``, ``LoraArguments``
and transformers' ``TrainingArguments`` (``starchat train --help`` lists them all with help).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import DataClassType


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message is one sentence."""


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="default",
        metadata={"help": "Model to fine-tune: 'default' (embedded SmolLM2), a folder, a .gguf file or a HF id."},
    )
    torch_dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype when loading: auto (bfloat16 when bf16 is on, else float32), "
                          "float32, bfloat16 or float16."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "sdpa, eager or flash_attention_2 (packing uses varlen kernels there); None = default."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


@dataclass
class DataArguments:
    dataset: str = field(
        default="training/data/code_assistant.jsonl",
        metadata={"help": "Dialogues: a .jsonl/.json/.parquet file, a folder with train.* files, or a HF dataset id."},
    )
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str | None = field(default=None, metadata={"help": "Split used for evaluation (None: none)."})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "Hold out this fraction of the training dialogues for evaluation."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Use at most this many training dialogues."})
    max_seq_length: int = field(default=1024, metadata={"help": "Tokens per row; longer dialogues are truncated."})
    packing: bool = field(
        default=True,
        metadata={"help": "Pack several dialogues per row (positions restart, no cross-attention)."},
    )
    chat_format: str = field(
        default="auto",
        metadata={"help": "auto: keep the tokenizer's own chat template, StarChat's if it has none; "
                          "starchat: always train the StarChat format (<|user|> … <|end|>)."},
    )


@dataclass
class LoraArguments:
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules that get adapters ('all-linear' or names such as q_proj v_proj)."},
    )
    lora_top_layers: int = field(
        default=0,
        metadata={"help": "Adapt only the last N transformer layers (0: every layer). Backpropagation then "
                          "stops below them, so a step costs less (the CPU adapt recipe)."},
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "Merge the adapters into the weights when saving, so the folder loads as a plain model."},
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoraArguments, TrainingArguments)


def _parser() -> HfArgumentParser:
    # DataClassType is NewType("DataClassType", Any), so no real dataclass matches it;
    # HfArgumentParser does take a tuple of dataclass types.
    return HfArgumentParser(cast("tuple[DataClassType, ...]", ARGUMENT_CLASSES))


def print_help() -> None:
    """Print every setting with its help text (``starchat train --help``)."""
    parser = _parser()
    parser.prog = "starchat train CONFIG.yaml"
    parser.print_help()


def _yaml_to_argv(settings: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            argv += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def parse_config(argv: list[str]) -> tuple[ModelArguments, DataArguments, LoraArguments, TrainingArguments]:
    """``CONFIG.yaml [--key value ...]`` -> the four argument dataclasses (overrides win)."""
    settings: dict[str, Any] = {}
    rest = list(argv)
    if rest and not rest[0].startswith("-"):
        path = Path(rest.pop(0))
        if not path.is_file():
            raise ConfigError(f"The config file {path} does not exist.")
        try:
            settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}).") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{path} must be a mapping of setting: value.")
        known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (see starchat train --help).")
    try:
        *parsed, remaining = _parser().parse_args_into_dataclasses(
            args=_yaml_to_argv(settings) + rest, return_remaining_strings=True
        )
    except ValueError as exc:
        raise ConfigError(f"Invalid training setting: {exc}") from None
    if remaining:
        raise ConfigError(f"Unknown override {remaining[0]!r} (see starchat train --help).")
    model_args, data_args, lora_args, training_args = parsed
    if data_args.chat_format not in ("auto", "starchat"):
        raise ConfigError(f"chat_format must be auto or starchat, not {data_args.chat_format!r}.")
    if data_args.max_seq_length < 16:
        raise ConfigError(f"max_seq_length must be at least 16, not {data_args.max_seq_length}.")
    if not 0.0 <= data_args.eval_fraction < 1.0:
        raise ConfigError(f"eval_fraction must be in [0, 1), not {data_args.eval_fraction}.")
    if lora_args.lora_top_layers < 0:
        raise ConfigError(f"lora_top_layers must be 0 (every layer) or more, not {lora_args.lora_top_layers}.")
    return model_args, data_args, lora_args, training_args
