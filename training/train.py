"""StarChat-style supervised chat fine-tuning: ``starchat train CONFIG.yaml [--key value ...]``.

Also ``python -m training.train CONFIG.yaml`` under torchrun / accelerate launch / deepspeed:
    torchrun --nproc_per_node=8 -m training.train training/configs/starchat_alpha.yaml \
        --deepspeed training/configs/deepspeed_z3_bf16.json
The output folder holds the model (16-bit weights gathered under ZeRO-3), the tokenizer with
its ``chat_template``, ``generation_config.eos_token_id`` = end-of-turn, ``train_log.jsonl``
and ``loss_curve.png`` (under DeepSpeed also ``zero_partition.json``: each rank's share of the
parameters, see ``training.distributed``); ``starchat ask --model FOLDER`` loads it directly.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

log = logging.getLogger("training.train")


def _setup_logging(training_args: Any) -> None:
    # Logs go to stderr; only the main process speaks above warnings.
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(name)s: %(message)s")


def load_datasets(tokenizer: Any, data_args: Any, seed: int) -> tuple[list[dict], list[dict] | None]:
    """Tokenize (and pack) the training and evaluation dialogues."""
    from training.data import DialogueError, load_dialogues
    from training.packing import pack_examples, packing_efficiency
    from training.tokenize import tokenize_dialogues

    train = load_dialogues(data_args.dataset, split=data_args.train_split)
    evaluation = load_dialogues(data_args.dataset, split=data_args.eval_split) if data_args.eval_split else None
    if data_args.eval_fraction and evaluation is None:
        shuffled = train[:]
        random.Random(seed).shuffle(shuffled)
        held = max(1, int(len(shuffled) * data_args.eval_fraction))
        evaluation, train = shuffled[:held], shuffled[held:]
    if data_args.max_samples:
        train = train[: data_args.max_samples]

    def prepare(rows: list[dict], name: str) -> list[dict]:
        examples = tokenize_dialogues(tokenizer, rows, data_args.max_seq_length)
        if not examples:
            raise DialogueError(f"No {name} dialogue has an assistant token within max_seq_length.")
        if not data_args.packing:
            return examples
        packed = pack_examples(examples, data_args.max_seq_length)
        log.info("%s: %d dialogues -> %d packed rows of %d tokens (%.0f%% full)", name, len(examples),
                 len(packed), data_args.max_seq_length,
                 100 * packing_efficiency(packed, data_args.max_seq_length))
        return packed

    return prepare(train, "train"), prepare(evaluation, "eval") if evaluation else None


def make_trainable(model: Any) -> Any:
    """Clear transformers' GGUF quantizer flag so Trainer accepts a GGUF-loaded model.

    The weights are plain floats once loaded, but the flag makes Trainer refuse the model
    ("purely quantized"). ``model.runtime.loading`` already hands us a safetensors copy of the
    embedded model; this covers users who load a GGUF file themselves.
    """
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def load_model(model_args: Any, training_args: Any, tokenizer: Any, folder: str,
               old_end_id: int | None = None) -> Any:
    """Load the model (ZeRO-3 partitions it at load when the DeepSpeed config is active)."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.tokenize import add_chat_tokens, copy_token_embedding, end_of_turn_id

    dtype: Any = model_args.torch_dtype
    if dtype == "auto":
        dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    else:
        dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": model_args.trust_remote_code}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = make_trainable(AutoModelForCausalLM.from_pretrained(folder, **kwargs))
    add_chat_tokens(tokenizer, model)
    new_end_id = end_of_turn_id(tokenizer)
    if old_end_id is not None and old_end_id != new_end_id:
        copy_token_embedding(model, old_end_id, new_end_id)
        log.info("%s starts as a copy of %s", tokenizer.convert_ids_to_tokens(new_end_id),
                 tokenizer.convert_ids_to_tokens(old_end_id))
    model.config.use_cache = False  # no KV cache in training (and it would hide packing)
    return model


def lora_targets(model: Any, lora_args: Any) -> dict[str, Any]:
    """peft's ``target_modules`` (and ``layers_to_transform``) for the recipe's LoRA settings.

    ``lora_top_layers: N`` adapts the last N transformer layers only; peft takes a layer
    subset with a list of module names only, so ``all-linear`` is spelt out here as the
    names of the model's Linear modules, the output layer excepted (peft's own rule).
    """
    targets = list(lora_args.lora_target_modules)
    top = lora_args.lora_top_layers
    if top <= 0:
        return {"target_modules": targets[0] if targets == ["all-linear"] else targets}
    import torch

    from training.config import ConfigError

    layers = model.config.get_text_config().num_hidden_layers
    if top > layers:
        raise ConfigError(f"lora_top_layers is {top}, but the model has {layers} layers.")
    if targets == ["all-linear"]:
        output = model.get_output_embeddings()
        targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                          if isinstance(module, torch.nn.Linear) and module is not output})
    return {"target_modules": targets, "layers_to_transform": list(range(layers - top, layers))}


def apply_lora(model: Any, lora_args: Any, tokenizer: Any) -> Any:
    """Wrap the model with LoRA adapters; the StarChat tokens' embedding rows stay trainable.

    ``all-linear`` is peft's: every Linear except the output layer, whatever the family calls
    them (q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj/down_proj in Llama; c_attn/c_proj/c_fc
    in StarCoder; q/k/v/o_proj and c_fc/c_proj in StarCoder2).
    """
    from peft import LoraConfig, get_peft_model

    from model.prompt.chat_format import STARCHAT_TOKENS

    new_ids = [tokenizer.convert_tokens_to_ids(t) for t in STARCHAT_TOKENS]
    # The input embedding's own name: embed_tokens (Llama, StarCoder2), wte (StarCoder/gpt_bigcode).
    embedding = model.get_input_embeddings()
    embed_name = next(name for name, module in model.named_modules() if module is embedding).split(".")[-1]
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        task_type="CAUSAL_LM",
        **lora_targets(model, lora_args),
        # Only these rows of the (possibly tied) embedding matrix train, not all 49k.
        trainable_token_indices={embed_name: new_ids},
    )
    model = get_peft_model(model, config)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # gradient checkpointing needs grads at the inputs
    return model


def save_output(trainer: Any, tokenizer: Any, lora_args: Any, training_args: Any) -> None:
    """Save a folder the server loads directly: weights, tokenizer + template, eos = end-of-turn."""
    from training.tokenize import end_of_turn_id

    end_id = end_of_turn_id(tokenizer)
    model = trainer.model
    for m in (model, getattr(model, "get_base_model", lambda: None)()):
        if m is not None and getattr(m, "generation_config", None) is not None:
            m.generation_config.eos_token_id = end_id
            m.generation_config.pad_token_id = tokenizer.pad_token_id
    # Training ran without a KV cache; the saved folder is for generation.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.use_cache = True
    output_dir = training_args.output_dir
    if lora_args.use_lora and lora_args.merge_lora and not training_args.deepspeed:
        if trainer.is_world_process_zero():
            merged = model.merge_and_unload()
            merged.generation_config.eos_token_id = end_id
            merged.save_pretrained(output_dir, safe_serialization=True)
            tokenizer.save_pretrained(output_dir)
    else:
        trainer.save_model(output_dir)  # gathers 16-bit weights under ZeRO-3 (see the json)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(output_dir)
    log.info("saved the model to %s (eos_token_id=%d %s)", output_dir, end_id,
             tokenizer.convert_ids_to_tokens(end_id))


def run(argv: list[str]) -> int:
    """Parse, train and save; errors in the input raise ValueError subclasses."""
    from transformers import AutoTokenizer, Trainer

    from model.runtime.loading import local_folder
    from training.config import ConfigError, parse_config
    from training.distributed import init_deepspeed_comm, write_partition_report
    from training.packing import PackedCollator, PaddingCollator
    from training.progress import JsonlLogCallback, plot_loss_curve
    from training.tokenize import add_chat_tokens, end_of_turn_id

    model_args, data_args, lora_args, training_args = parse_config(argv)
    output_dir = training_args.output_dir
    if output_dir is None:  # TrainingArguments fills in "trainer_output"; None would be a bug there
        raise ConfigError("output_dir is not set; give --output_dir or set it in the recipe.")
    _setup_logging(training_args)
    init_deepspeed_comm(training_args)  # before loading: zero.Init partitions across the ranks
    folder = local_folder(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=model_args.trust_remote_code)
    # A chat model switched to the StarChat format: remember how it used to end a turn.
    old_end_id = end_of_turn_id(tokenizer) if tokenizer.chat_template else None
    add_chat_tokens(tokenizer, force_template=data_args.chat_format == "starchat")
    train_rows, eval_rows = load_datasets(tokenizer, data_args, training_args.seed)
    model = load_model(model_args, training_args, tokenizer, folder, old_end_id)
    if lora_args.use_lora:
        model = apply_lora(model, lora_args, tokenizer)
    collator_class = PackedCollator if data_args.packing else PaddingCollator
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator_class(tokenizer.pad_token_id, pad_to_multiple_of=8),
        processing_class=tokenizer,
        callbacks=[JsonlLogCallback(output_dir)],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if training_args.deepspeed:
        write_partition_report(trainer, output_dir)
    save_output(trainer, tokenizer, lora_args, training_args)
    if trainer.is_world_process_zero():
        plot = plot_loss_curve(output_dir)
        log.info("loss curve: %s", plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``starchat train``; returns the exit status (2 for bad input)."""
    from model.runtime.spec import ModelSpecError
    from training.config import ConfigError, print_help
    from training.data import DialogueError

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help") or "--help" in args:
        print_help()
        return 0 if args else 2
    try:
        return run(args)
    except SystemExit as exc:  # argparse already printed its one-line reason
        return exc.code if isinstance(exc.code, int) else 2
    except (ConfigError, DialogueError, ModelSpecError) as exc:
        # Bad recipes, data and model specs: one sentence, no traceback.
        print(f"starchat train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
