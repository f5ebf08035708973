"""``starchat export-gguf`` (forwarded by lsp_server.cli):

- ``starchat export-gguf FOLDER OUT.gguf [--type f32|f16|q8_0|q4_0|q4_1]``: a model folder;
- ``starchat export-gguf ADAPTER_DIR OUT.gguf --base BASE.gguf [--type f32|f16|q8_0]``: a peft
  LoRA adapter folder (it holds ``adapter_config.json``) as a llama.cpp adapter for the base
  model file BASE.gguf (``--base default``: the embedded model's file).

Prints the written file's path on stdout and its size on stderr; bad input is one sentence
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import LORA_QTYPES, QTYPES, ExportError, export_folder, export_lora


def _export(args: argparse.Namespace) -> Path:
    is_adapter = (Path(args.folder).expanduser() / "adapter_config.json").is_file()
    if is_adapter and args.base is None:
        raise ExportError(f"{args.folder} is a LoRA adapter: name the base model file it applies to with "
                          "--base BASE.gguf (or --base default for the embedded model).")
    if not is_adapter and args.base is not None:
        raise ExportError(f"--base is for LoRA adapters, and {args.folder} holds no adapter_config.json.")
    if is_adapter:
        qtype = args.type or "f16"
        if qtype not in LORA_QTYPES:
            raise ExportError(f"llama.cpp applies {', '.join(LORA_QTYPES)} adapters, not {qtype}.")
        return export_lora(args.folder, args.base, args.out, qtype)
    return export_folder(args.folder, args.out, args.type or "f16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="starchat export-gguf",
        description="Convert a trained model folder (llama, qwen2, starcoder2, gpt_bigcode) to a GGUF "
                    "file that llama.cpp runs, or a LoRA adapter folder to a llama.cpp adapter for a "
                    "base GGUF file (docs/export.md).")
    parser.add_argument("folder", help="a transformers model folder (what `starchat train` writes) "
                                       "or a peft LoRA adapter folder")
    parser.add_argument("out", help="the .gguf file to write (replaced only once the new one is complete)")
    parser.add_argument("--base", help="for an adapter: the base model's GGUF file ('default': the embedded model)")
    parser.add_argument("--type", choices=QTYPES, default=None,
                        help="tensor type (default f16; adapters: f32, f16 or q8_0)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = _export(args)
    except ExportError as exc:
        sys.stderr.write(f"starchat export-gguf: {exc}\n")
        return 2
    sys.stderr.write(f"[wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.type or 'f16'})]\n")
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
