"""``starchat export-gguf FOLDER OUT.gguf [--type f32|f16|q8_0|q4_0]`` (forwarded by lsp_server.cli).

Prints the written file's path on stdout and its size on stderr; bad input is one sentence
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from . import QTYPES, ExportError, export_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="starchat export-gguf",
        description="Convert a trained model folder (llama, qwen2, starcoder2, gpt_bigcode) to a GGUF "
                    "file that llama.cpp runs (docs/export.md).")
    parser.add_argument("folder", help="a transformers model folder (what `starchat train` writes)")
    parser.add_argument("out", help="the .gguf file to write (replaced only once the new one is complete)")
    parser.add_argument("--type", choices=QTYPES, default="f16", help="tensor type (default f16)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = export_folder(args.folder, args.out, args.type)
    except ExportError as exc:
        sys.stderr.write(f"starchat export-gguf: {exc}\n")
        return 2
    sys.stderr.write(f"[wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.type})]\n")
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
