"""Prompts and generation settings: chat formats, the token budget, the light tokenizer,
FIM prompts, fenced-block extraction, ``GenerationParams``. No torch or transformers here,
and nothing from the layers above."""
