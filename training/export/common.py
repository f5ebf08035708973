"""What every module of ``training.export`` shares (re-exported by the package): the output
types and ``ExportError``. A leaf module, so the package's lazy imports of its modules and
their imports of these names make no cycle."""

from __future__ import annotations

QTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
LORA_QTYPES = ("f32", "f16", "q8_0")  # the adapter tensor types llama.cpp applies


class ExportError(ValueError):
    """The input cannot become a GGUF file; the message is one sentence for the user."""
