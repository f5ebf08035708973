"""The one rule set for generation settings (model.prompt.params): strict, lenient, torch-free."""

from __future__ import annotations

import math
import subprocess
import sys

import msgpack
import pytest

from model.prompt.params import MAX_NEW_TOKENS, GenerationParams


@pytest.mark.parametrize("field,value", [
    ("max_new_tokens", 0), ("max_new_tokens", 2**64), ("max_new_tokens", MAX_NEW_TOKENS + 1),
    ("max_new_tokens", "many"), ("max_new_tokens", True), ("max_new_tokens", 1.5),
    ("temperature", 50), ("temperature", -1), ("temperature", math.nan), ("temperature", math.inf),
    ("temperature", "0.2"), ("temperature", 10**400),
    ("top_p", 0), ("top_p", 1.01), ("top_p", math.nan),
    ("top_k", -1), ("top_k", 2**70), ("top_k", 0.5),
    ("repetition_penalty", 0), ("repetition_penalty", 11), ("repetition_penalty", -math.inf),
    ("stop", "###"), ("stop", [""]), ("stop", [3]), ("stop", ["\ud800"]), ("stop", ["x" * 257]),
    ("stop", ["s"] * 17),
    ("seed", -1), ("seed", 2**64), ("seed", "7"), ("seed", False),
])
def test_each_bad_value_is_refused_with_a_sentence_naming_its_field(field, value):
    with pytest.raises(ValueError) as strict:
        GenerationParams.from_dict({field: value})
    sentence = str(strict.value)
    assert sentence.startswith(field) and sentence.endswith(".") and sentence.count(". ") == 0
    # The lenient form used by settings gives the same sentence and keeps the default.
    params, problems = GenerationParams.parse({field: value, "max_new_tokens": 64} if field != "max_new_tokens"
                                              else {field: value, "temperature": 0.5})
    assert problems == {field: sentence}
    assert getattr(params, field) == getattr(GenerationParams(), field)
    assert params.max_new_tokens == 64 or params.temperature == 0.5  # the good field is kept
    with pytest.raises(ValueError, match=f"^{field}"):
        GenerationParams(**{field: value})  # direct construction obeys the same rules


def test_two_bad_fields_give_two_sentences_and_unknown_names_are_refused():
    with pytest.raises(ValueError) as raised:
        GenerationParams.from_dict({"temperature": 50, "repetition_penalty": 0})
    text = str(raised.value)
    assert text.startswith("temperature must be") and "repetition_penalty must be" in text
    with pytest.raises(ValueError, match="Unknown generation setting 'beams'"):
        GenerationParams.from_dict({"beams": 3})
    with pytest.raises(ValueError, match="must be a map"):
        GenerationParams.from_dict(["temperature", 1])


def test_good_values_are_normalised_and_pack_as_msgpack():
    params = GenerationParams.from_dict({"max_new_tokens": 64.0, "temperature": 1, "top_k": 40,
                                         "stop": ["###", "\nUser:"], "seed": 2**32 - 1})
    assert params.max_new_tokens == 64 and type(params.max_new_tokens) is int
    assert params.temperature == 1.0 and type(params.temperature) is float
    assert params.stop == ("###", "\nUser:")
    d = params.to_dict()
    assert d["stop"] == ["###", "\nUser:"] and d["seed"] == 2**32 - 1
    assert msgpack.unpackb(msgpack.packb(d)) == d
    assert GenerationParams.from_dict(None) == GenerationParams() == GenerationParams.from_dict({})


def test_the_engine_re_exports_the_same_class():
    from model.prompt import params
    from model.runtime import engine

    assert engine.GenerationParams is params.GenerationParams


def test_importing_the_rules_imports_no_torch():
    code = ("import sys, model.prompt.params, lsp_server.config, lsp_server.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
