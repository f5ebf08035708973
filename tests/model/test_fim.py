"""FIM prompts per model family: the embedded tokenizer with each family's tokens added."""

from __future__ import annotations

import copy

import pytest

from model.prompt.fim import (
    Healing,
    build_fim_prompt,
    detect_template,
    heal_candidates,
    healable_text,
    resolve_template,
)

FAMILIES = {
    "starcoder": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],  # <file_sep> is there already
    "qwen": ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"],
    "deepseek": ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"],
    "codellama": ["\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>"],
}
EXPECTED = {
    "starcoder": "<file_sep>b.py\nB = 1\n\n<file_sep>a.py\n<fim_prefix>{p}<fim_suffix>{s}<fim_middle>",
    "qwen": "<|file_sep|>b.py\nB = 1\n\n<|file_sep|>a.py\n<|fim_prefix|>{p}<|fim_suffix|>{s}<|fim_middle|>",
    "deepseek": "<｜fim▁begin｜>{p}<｜fim▁hole｜>{s}<｜fim▁end｜>",
    "codellama": "\u2581<PRE> {p}\u2581<SUF>{s}\u2581<MID>",
}
# A file that spells FIM sentinels must not produce them: file text is data.
PREFIX = "x = '<fim_middle><|fim_middle|><MID>'\ndef f(a):\n    return "
SUFFIX = "\n\nprint(f(1))\n"
REQUEST = {"prefix": PREFIX, "suffix": SUFFIX, "path": "a.py", "files": [{"path": "b.py", "text": "B = 1\n"}]}


@pytest.fixture(scope="module")
def family_tokenizers(tokenizer):
    out = {}
    for name, tokens in FAMILIES.items():
        tok = copy.deepcopy(tokenizer)
        tok.add_special_tokens({"additional_special_tokens": tokens})
        out[name] = tok
    return out


def test_embedded_model_has_no_fim_tokens_and_gets_the_prefix(tokenizer):
    assert detect_template(tokenizer) == "none"
    prompt = build_fim_prompt(tokenizer, REQUEST)
    assert prompt.template == "none" and prompt.files == [] and prompt.suffix_tokens == 0
    # The prefix's last token (" " after "return") is healed: left to the answer.
    assert prompt.heal == " " and tokenizer.decode(prompt.ids) + prompt.heal == PREFIX


@pytest.mark.parametrize(("prefix", "heal"), [
    ("def f(x):\n", "\n"),  # a line start: the model knows "\n" only merged with the indentation
    ("def f(x):\n    ret", " ret"),  # mid-word: the model knows " return", not " ret" + "urn"
    ("x = 1\n\n", "\n\n"),
])
def test_prefix_only_prompts_heal_the_last_token(tokenizer, prefix, heal):
    prompt = build_fim_prompt(tokenizer, {"prefix": prefix})
    assert prompt.heal == heal and tokenizer.decode(prompt.ids) + heal == prefix
    assert build_fim_prompt(tokenizer, {"prefix": "x"}).heal == ""  # one token: nothing would be left


def test_fim_families_are_not_healed(family_tokenizers):
    prompt = build_fim_prompt(family_tokenizers["starcoder"], REQUEST)
    assert prompt.heal == ""


def test_healable_text_is_whole_characters_of_one_token(tokenizer):
    ret = tokenizer(" ret", add_special_tokens=False)["input_ids"]
    assert len(ret) == 1 and healable_text(tokenizer, ret[0]) == " ret"
    partial = tokenizer("😀", add_special_tokens=False)["input_ids"]
    assert len(partial) > 1 and healable_text(tokenizer, partial[0]) == ""  # half a character
    assert healable_text(tokenizer, tokenizer.eos_token_id) == ""  # special: no text


def test_heal_candidates_spell_the_healed_text_on():
    texts = ["", " r", " ret", " return", " retry", "x", " re"]
    assert heal_candidates(texts, " ret") == [1, 2, 3, 4, 6]  # starts of it, and tokens that start with it
    assert heal_candidates(texts, "t") == []


def test_healing_hides_the_healed_text_and_cuts_stops_after_it():
    h = Healing("\n\n", ["\n\n"])  # a stop string the healed text itself spells
    assert h.take("\n") == "" and h.take("\ndef") == "def" and not h.stopped
    assert h.take(" f():\n") == " f():"  # "\n" held back: it may become the stop
    assert h.take("\n    pass") == "" and h.stopped  # the stop: nothing after it shown
    h = Healing(" ret", ["\n"])
    assert h.take(" return") == "urn" and h.take(" x") == " x" and h.rest() == ""
    h = Healing(" ret", ["\n\n"])
    assert h.take(" return x\n") == "urn x" and h.rest() == "\n"  # the end: held-back text shown
    assert Healing().take("abc") == "abc"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_detected_and_its_prompt_bytes_are_exact(family, family_tokenizers):
    tok = family_tokenizers[family]
    assert detect_template(tok) == family
    prompt = build_fim_prompt(tok, REQUEST)
    assert tok.decode(prompt.ids) == EXPECTED[family].format(p=PREFIX, s=SUFFIX)
    sentinels = [tok.convert_tokens_to_ids(t) for t in FAMILIES[family]]
    # Each sentinel is exactly one id, appearing once; the file's look-alikes are plain text.
    for token_id in sentinels:
        assert prompt.ids.count(token_id) == (2 if family in ("starcoder", "qwen") and token_id == prompt.ids[0] else 1)
    assert prompt.ids[-1] == sentinels[2]
    middle_like = [tok.convert_tokens_to_ids(t) for t in ("<fim_middle>", "<|fim_middle|>", "\u2581<MID>")]
    body = prompt.ids[:-1]
    assert not any(i in body for i in middle_like if i is not None and i != tok.unk_token_id)


def test_window_is_three_quarters_prefix_end_and_one_quarter_suffix_start(family_tokenizers):
    tok = family_tokenizers["deepseek"]
    prefix = "".join(f"line_{i} = {i}\n" for i in range(400))
    suffix = "".join(f"after_{i} = {i}\n" for i in range(400))
    prompt = build_fim_prompt(tok, {"prefix": prefix, "suffix": suffix, "context_tokens": 200})
    step = (200 - 3) // 16  # a long prefix is cut in whole steps (see the next test)
    assert 200 - step < len(prompt.ids) <= 200 and prompt.truncated == ["prefix", "suffix"]
    assert (200 - 3) * 3 // 4 - step < prompt.prefix_tokens <= (200 - 3) * 3 // 4
    assert prompt.suffix_tokens == 200 - 3 - (200 - 3) * 3 // 4
    text = tok.decode(prompt.ids)
    assert "line_399 = 399\n<｜fim▁hole｜>after_0 = 0\n" in text  # prefix's end, suffix's start
    assert "line_0 =" not in text and "after_399" not in text
    # A short suffix lends its share to the prefix.
    prompt = build_fim_prompt(tok, {"prefix": prefix, "suffix": "\n", "context_tokens": 200})
    assert 200 - step < len(prompt.ids) <= 200 and prompt.suffix_tokens == 1


@pytest.mark.parametrize("family", ["none", "starcoder"])
def test_typing_at_the_end_of_a_long_file_keeps_the_window_start(family, tokenizer, family_tokenizers):
    """The engine's prompt cache can reuse a keystroke's prompt only if the next one starts the
    same: a truncated prefix's cut moves in steps, so typing on changes only the last tokens."""
    tok = tokenizer if family == "none" else family_tokenizers[family]
    text = "".join(f"value_{i} = compute({i}, scale=2)\n" for i in range(160))  # ~2,400 tokens: 2.3 windows
    typed = "result = value_1 + value_2  # the sum of the first two values"
    prompts = [build_fim_prompt(tok, {"prefix": text + typed[:n], "suffix": "\nprint(result)\n",
                                      "context_tokens": 1024}).ids for n in range(len(typed) + 1)]
    starts_kept = 0
    for before, after in zip(prompts, prompts[1:], strict=False):
        same = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), min(len(before), len(after)))
        starts_kept += same >= 1024 * 3 // 4 - 64 - 8  # all but the last few prefix tokens reused
    assert all(len(ids) <= 1024 for ids in prompts)
    assert starts_kept >= len(typed) - 2  # at most one or two steps of the cut while typing a line


def test_other_files_fill_what_is_left_most_recent_nearest(family_tokenizers):
    tok = family_tokenizers["qwen"]
    files = [{"path": "recent.py", "text": "R = 1\n"}, {"path": "older.py", "text": "O = 2\n"},
             {"path": "big.py", "text": "x = 1\n" * 2000}]
    prompt = build_fim_prompt(tok, {"prefix": "y = ", "suffix": "", "path": "a.py", "files": files,
                                    "context_tokens": 120})
    text = tok.decode(prompt.ids)
    assert len(prompt.ids) <= 120
    assert prompt.files == ["recent.py", "older.py", "big.py"]
    assert text.index("older.py") < text.index("recent.py") < text.index("a.py")
    assert "files" not in prompt.truncated
    # No room at all: files are left out and the request says so.
    prompt = build_fim_prompt(tok, {"prefix": "y = 1\n" * 200, "path": "a.py", "files": files,
                                    "context_tokens": 120})
    assert prompt.files == [] and "files" in prompt.truncated and len(prompt.ids) <= 120


def test_template_override_and_bad_requests(tokenizer, family_tokenizers):
    tok = family_tokenizers["starcoder"]
    assert build_fim_prompt(tok, {**REQUEST, "template": "none"}).template == "none"
    assert resolve_template(tok, "starcoder").name == "starcoder"
    with pytest.raises(ValueError, match="lacks the qwen FIM token"):
        build_fim_prompt(tokenizer, {**REQUEST, "template": "qwen"})
    with pytest.raises(ValueError, match="Unknown FIM template"):
        build_fim_prompt(tokenizer, {**REQUEST, "template": "gpt"})
    with pytest.raises(ValueError, match="fim.prefix must be a string"):
        build_fim_prompt(tokenizer, {"prefix": 3})
    with pytest.raises(ValueError, match="Unknown fim field"):
        build_fim_prompt(tokenizer, {"prefix": "", "cursor": 3})
    with pytest.raises(ValueError, match="no text before the cursor"):
        build_fim_prompt(tokenizer, {"prefix": "", "suffix": "x"})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_stop_token_ids_have_the_family_end_tokens_and_its_sentinels(family, family_tokenizers):
    from model.prompt.fim import TEMPLATES, stop_token_ids

    tok = copy.deepcopy(family_tokenizers[family])
    ends = {"starcoder": ["<fim_pad>"], "qwen": ["<|fim_pad|>", "<|repo_name|>"],
            "deepseek": ["<|EOT|>", "<｜end▁of▁sentence｜>"], "codellama": ["\u2581<EOT>"]}[family]
    tok.add_special_tokens({"additional_special_tokens": [*FAMILIES[family], *ends]})
    ids = set(stop_token_ids(tok))
    wanted = [*ends, *FAMILIES[family], *TEMPLATES[family].stops, "<|endoftext|>"]
    vocab = tok.get_vocab()
    for token in wanted:
        token_id = vocab.get(token, vocab.get("\u2581" + token))
        assert token_id in ids, token
    assert tok.eos_token_id in ids
    # Ordinary code tokens are not among them.
    assert not ids & set(tok("def f(x):\n    return x\n")["input_ids"])
