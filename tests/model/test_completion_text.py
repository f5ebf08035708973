"""Inline completion post-processing, the prefix cache and the ``starchat.completion`` settings."""

from __future__ import annotations

from lsp_server.config import CompletionSettings, parse_settings
from model.prompt.completion_text import (
    CompletionCache,
    Cursor,
    drop_suffix_lines,
    one_block,
    postprocess,
    to_end_of_line,
    trim_line_suffix,
)


def test_mid_line_completes_to_the_end_of_the_line():
    assert to_end_of_line("x + 1\n    return y") == "x + 1"
    cursor = Cursor(line_prefix="    total = ", line_suffix="")
    assert postprocess("sum(values)  \nprint(total)\n", cursor) == "sum(values)"


def test_block_stops_at_a_dedent_below_the_cursor():
    text = "if x:\n        y = 1\n    return y\nprint(1)"
    assert one_block(text, "    ") == "if x:\n        y = 1\n    return y"


def test_block_stops_at_a_blank_line_after_code():
    text = "def f():\n    return 1\n\ndef g():\n    pass"
    assert one_block(text, "") == "def f():\n    return 1"
    # Blank lines before any code are kept (the model may start with one).
    assert one_block("\n    x = 1\n\ny", "    ") == "\n    x = 1"


def test_text_right_of_the_cursor_is_not_repeated():
    assert trim_line_suffix("len(items))", ")") == "len(items)"
    assert trim_line_suffix('name"}', '"}') == "name"
    assert trim_line_suffix('name": 1', '"}') == 'name": 1'
    assert trim_line_suffix("abc", "") == "abc"
    assert postprocess("a, b)\n", Cursor(line_prefix="f(", line_suffix=")")) == "a, b"


def test_lines_repeating_the_suffix_are_dropped():
    text = "    x = 1\n    y = 2\nreturn z\nmore"
    assert drop_suffix_lines(text, ("", "return z", "after")) == "    x = 1\n    y = 2"
    cursor = Cursor(line_prefix="    ", line_suffix="", next_lines=("    y = 2",))
    assert postprocess("x = 1\n    y = 2\n    z = 3", cursor) == "x = 1"


def test_cursor_at_splits_the_text_around_it():
    cursor = Cursor.at("import os\n    total = ", "sum(xs)\n" + "".join(f"line{i}\n" for i in range(8)))
    assert cursor == Cursor("    total = ", "sum(xs)", ("line0", "line1", "line2", "line3", "line4"))
    assert Cursor.at("", "") == Cursor("", "", ())
    assert Cursor.at("x\n", "").block_mode


def test_nothing_useful_is_no_suggestion():
    assert postprocess("   \n", Cursor("x = ", "")) is None
    assert postprocess("\n\n", Cursor("", "")) is None
    assert postprocess(")", Cursor("f(x", ")")) is None


def test_cache_serves_the_rest_when_the_user_types_the_suggestion():
    cache = CompletionCache()
    cache.put("a", "x = ", "\n", "compute(1)")
    assert cache.get("a", "x = ", "\n") == "compute(1)"
    assert cache.get("a", "x = com", "\n") == "pute(1)"
    assert cache.get("a", "x = cop", "\n") is None  # typed something else
    assert cache.get("a", "x = compute(1)", "\n") is None  # typed it all
    assert cache.get("a", "x = com", "\nmore") is None  # the text after the cursor changed
    assert cache.get("b", "x = com", "\n") is None
    cache.forget("a")
    assert cache.get("a", "x = com", "\n") is None


def test_cache_keeps_recent_suggestions_and_knows_one_typed_through():
    cache = CompletionCache(per_document=2)
    cache.put("a", "x = ", "\n", "compute(1)")
    cache.put("a", "x = compute(1)\n", "", "y = x + 1")
    # The cursor came back to the first place (an undo): its suggestion again.
    assert cache.get("a", "x = ", "\n") == "compute(1)"
    assert cache.get("a", "x = compute(1)\ny", "") == " = x + 1"
    # Typed or accepted to its end: the place after it is where the next one is wanted.
    assert cache.typed_through("a", "x = compute(1)", "\n")
    assert not cache.typed_through("a", "x = compute", "\n")
    assert not cache.typed_through("a", "x = compute(1)", "\nmore")
    assert not cache.typed_through("a", "x = compute(2)", "\n")  # same length, other text
    assert not cache.typed_through("a", "y = compute(1)", "\n")
    # The same place again replaces its entry; the oldest goes beyond per_document.
    cache.put("a", "x = ", "\n", "other()")
    assert cache.get("a", "x = ", "\n") == "other()"
    cache.put("a", "z", "", "ero")
    assert cache.get("a", "x = compute(1)\n", "") is None
    assert cache.get("a", "x = ", "\n") == "other()"


def test_completion_settings_defaults_and_bad_values():
    settings, problems = parse_settings({})
    assert settings.completion == CompletionSettings() and problems == []
    assert settings.completion.max_new_tokens == 64 and settings.completion.context_tokens == 1024
    settings, problems = parse_settings({"completion": {
        "enabled": False, "maxNewTokens": 16, "contextTokens": 512, "model": " tiny.gguf ", "template": "qwen",
        "invokedItems": 5, "adapterScale": 0}})
    assert settings.completion == CompletionSettings(False, 16, 512, "tiny.gguf", "qwen", 5, 0.0) and problems == []
    assert CompletionSettings().invoked_items == 3
    # unset or null: completions apply the scale a BASE+DIR adapter carries (the worker's choice)
    assert CompletionSettings().adapter_scale is None
    settings, problems = parse_settings({"completion": {"adapterScale": None}})
    assert settings.completion.adapter_scale is None and problems == []


def test_a_completion_request_sends_an_adapter_scale_only_when_set():
    """Unset, the worker applies the completion scale the adapter carries (model.runtime.spec)."""
    from types import SimpleNamespace

    from lsp_server.features.completion import InlineCompletion

    def params(scale):
        server = SimpleNamespace(settings=SimpleNamespace(completion=CompletionSettings(adapter_scale=scale)),
                                 workspace=SimpleNamespace(text_documents={}, root_path=None))
        request = InlineCompletion(server)._request("file:///p/m.py", "x = ", "", SimpleNamespace(block_mode=False))
        assert request["fim"]["prefix"] == "x = " and request["params"]["stop"] == ["\n"]
        return request["params"]

    assert "adapter_scale" not in params(None)
    assert params(0)["adapter_scale"] == 0.0 and params(1.5)["adapter_scale"] == 1.5
    settings, problems = parse_settings({"completion": {
        "enabled": "yes", "maxNewTokens": 0, "contextTokens": True, "model": "", "template": "gpt", "x": 1,
        "invokedItems": 0, "adapterScale": 9}})
    assert settings.completion == CompletionSettings()
    assert len(problems) == 8
    assert any("starchat.completion.adapterScale must be a number from 0" in p for p in problems)
    assert any("starchat.completion.invokedItems must be an integer from 1 to 8" in p for p in problems)
    assert any("starchat.completion.maxNewTokens must be an integer from 1 to 1024" in p for p in problems)
    assert any("Unknown setting starchat.completion.x" in p for p in problems)
    settings, problems = parse_settings({"completion": 3})
    assert settings.completion == CompletionSettings() and problems == [
        "Setting starchat.completion must be an object; using the defaults."]
