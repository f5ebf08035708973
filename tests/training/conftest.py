"""Shared fixtures: the embedded model's real tokenizer (loaded once) and tiny models over it."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from model.runtime.spec import default_gguf_path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The embedded model's tokenizer, read from its GGUF once and saved as a plain folder."""
    gguf = default_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tokenizer(tokenizer_dir):
    """A fresh copy per test, since add_chat_tokens mutates it."""
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def starchat_tokenizer(tokenizer):
    """The same tokenizer switched to the StarChat format (tokens + template)."""
    from training.tokenize import add_chat_tokens

    return add_chat_tokens(tokenizer, force_template=True)
