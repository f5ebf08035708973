"""LiteTokenizer gives the same ids, text and prompts as transformers' AutoTokenizer.

The reference is always ``AutoTokenizer.from_pretrained`` on the same folder (not the
``tokenizer`` fixture, which may itself become a LiteTokenizer): the embedded model's
tokenizer, the same with the four StarChat tokens and template added, and a small
hand-made WordPiece folder with the legacy special_tokens_map.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from model.prompt.chat_format import STARCHAT_TEMPLATE, STARCHAT_TOKENS, chat_format_for
from model.prompt.tokenizer import LiteTokenizer, can_load_lite, load_lite_tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "naïve café — 日本語 😀🚀 ½",
    "stop here<|im_end|> and <|im_start|>user\nnot a turn<|end|><eot>",
    "   leading and trailing whitespace\t\n  ",
    "",
]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Fix `x = 1 +`"},
        {"role": "assistant", "content": "x = 1 + 1"},
        {"role": "user", "content": "Why <|im_end|>?"},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
]
ATTRIBUTES = [
    "eos_token",
    "eos_token_id",
    "bos_token",
    "bos_token_id",
    "pad_token",
    "pad_token_id",
    "unk_token",
    "unk_token_id",
    "all_special_tokens",
    "all_special_ids",
    "special_tokens_map",
    "extra_special_tokens",
    "model_max_length",
    "vocab_size",
    "name_or_path",
    "chat_template",
]


@pytest.fixture(scope="module")
def default_folder() -> str:
    from model.runtime.loading import local_folder

    return local_folder("default")


@pytest.fixture(scope="module")
def starchat_folder(default_folder, tmp_path_factory) -> str:
    from transformers import AutoTokenizer

    from training.tokenize import add_chat_tokens

    tok = AutoTokenizer.from_pretrained(default_folder)
    tok.chat_template = None
    add_chat_tokens(tok)
    folder = str(tmp_path_factory.mktemp("starchat-tokenizer"))
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory) -> str:
    """Not BPE (so clean_up_tokenization_spaces applies), special tokens in the legacy map."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    words = "[UNK] [CLS] [SEP] [PAD] [MASK] hello world . , ! ? ' s it don t n ##s <tool>".split()
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_tokens(["<eot>"])  # an ordinary added token that the config names as eos
    folder = tmp_path_factory.mktemp("wordpiece")
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": True,
        "model_max_length": 512,
        "eos_token": "<eot>",
        "additional_special_tokens": ["<tool>"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    special = {
        "unk_token": "[UNK]",
        "cls_token": {"content": "[CLS]", "lstrip": False, "rstrip": False, "normalized": False},
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "mask_token": "[MASK]",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    return str(folder)


@pytest.fixture(scope="module")
def v4_folder(default_folder, tmp_path_factory) -> str:
    """The default tokenizer with a config as transformers 4 wrote them (and a few extras)."""
    folder = tmp_path_factory.mktemp("v4")
    shutil.copy(f"{default_folder}/tokenizer.json", folder)
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    im_end = {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False, "rstrip": False}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,  # ignored when there is a tokenizer.json
        "added_tokens_decoder": {str(t.pop("id")): t for t in added},
        "additional_special_tokens": ["<repo_name>", "<file_sep>"],
        "bos_token": "<|im_start|>",
        "eos_token": im_end,
        "filename_token": "<filename>",
        "chat_template": STARCHAT_TEMPLATE.replace("'<|assistant|>", "bos_token + '<|assistant|>"),
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module", params=["default", "starchat", "wordpiece", "v4"])
def pair(request) -> tuple[LiteTokenizer, object]:
    """(LiteTokenizer, transformers tokenizer) loaded from the same folder."""
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(f"{request.param}_folder")
    return load_lite_tokenizer(folder), AutoTokenizer.from_pretrained(folder)


def test_the_folders_are_what_the_tests_need(default_folder, starchat_folder):
    lite = load_lite_tokenizer(default_folder)
    assert lite.eos_token == "<|im_end|>" and lite.eos_token_id == 2
    assert "<|im_start|>" in lite.chat_template
    starchat = load_lite_tokenizer(starchat_folder)
    assert starchat.chat_template == STARCHAT_TEMPLATE
    assert all(token in starchat.all_special_tokens for token in STARCHAT_TOKENS)
    assert len(starchat) == len(lite) + 4


def test_attributes_match(pair):
    lite, hf = pair
    for name in ATTRIBUTES:
        assert getattr(lite, name) == getattr(hf, name), name
    assert len(lite) == len(hf)
    assert lite.get_vocab() == hf.get_vocab()
    assert lite.get_added_vocab() == hf.get_added_vocab()
    tokens = [*lite.all_special_tokens, "hello", "not-a-token-at-all"]
    assert lite.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert lite.convert_tokens_to_ids(tokens[0]) == hf.convert_tokens_to_ids(tokens[0])
    ids = list(range(8)) + [len(lite) - 1]
    assert lite.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert lite.convert_ids_to_tokens(ids, skip_special_tokens=True) == hf.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert lite.convert_ids_to_tokens(5) == hf.convert_ids_to_tokens(5)


@pytest.mark.parametrize("text", TEXTS)
def test_ids_and_decoding_match(pair, text):
    lite, hf = pair
    for split in (True, False):
        for special in (True, False):
            ids = lite(text, add_special_tokens=special, split_special_tokens=split)["input_ids"]
            expected = hf(text, add_special_tokens=special, split_special_tokens=split)["input_ids"]
            assert ids == expected, (split, special)
            for skip in (True, False):
                assert lite.decode(ids, skip_special_tokens=skip) == hf.decode(
                    ids, skip_special_tokens=skip
                )
    assert lite(text) == dict(hf(text))
    assert lite.encode(text) == hf.encode(text)
    assert lite.encode(text, add_special_tokens=False) == hf.encode(text, add_special_tokens=False)
    assert lite.tokenize(text) == hf.tokenize(text)


def test_split_special_tokens_keeps_special_strings_as_text(default_folder):
    lite = load_lite_tokenizer(default_folder)
    assert lite("a<|im_end|>", add_special_tokens=False)["input_ids"][-1] == 2
    split = lite("a<|im_end|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert 2 not in split and len(split) > 2
    assert lite.decode(split, skip_special_tokens=True) == "a<|im_end|>"
    # The setting does not stick to later calls.
    assert lite.encode("<|im_end|>", add_special_tokens=False) == [2]


def test_batches_and_ids_from_anywhere(pair):
    lite, hf = pair
    assert lite(TEXTS, add_special_tokens=False) == dict(hf(TEXTS, add_special_tokens=False))
    batch = [lite.encode(t) for t in TEXTS[:3]]
    assert lite.decode(batch) == hf.decode(batch)
    assert lite.decode(batch[0][0]) == hf.decode(batch[0][0])


def test_decode_cleans_up_spaces_only_where_transformers_does(pair, wordpiece_folder):
    lite, hf = pair
    ids = lite.encode("hello , world ! it 's", add_special_tokens=False)
    for clean in (None, True, False):
        assert lite.decode(ids, clean_up_tokenization_spaces=clean) == hf.decode(
            ids, clean_up_tokenization_spaces=clean
        )
    if lite.name_or_path == wordpiece_folder:
        assert lite.decode(ids) == "hello, world! it's"


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_chat_template_matches(pair, conversation):
    lite, hf = pair
    if hf.chat_template is None:  # both refuse, with a sentence
        assert lite.chat_template is None
        with pytest.raises(ValueError, match="chat_template"):
            hf.apply_chat_template(conversation, tokenize=False)
        with pytest.raises(ValueError, match="no chat_template"):
            lite.apply_chat_template(conversation, tokenize=False)
        return
    texts = []
    for prompt in (True, False):
        text = lite.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt)
        assert text == hf.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=prompt
        )
        assert conversation[-1]["content"] in text
        texts.append(text)
        ids = lite.apply_chat_template(
            conversation, add_generation_prompt=prompt, return_dict=False
        )
        assert ids == hf.apply_chat_template(
            conversation, add_generation_prompt=prompt, return_dict=False
        )
        assert lite.apply_chat_template(conversation, add_generation_prompt=prompt) == dict(
            hf.apply_chat_template(conversation, add_generation_prompt=prompt)
        )
    assert texts[0].startswith(texts[1]) and texts[0].endswith(
        "assistant|>\n" if "<|user|>" in texts[0] else "assistant\n"
    )


def test_template_helpers_match_transformers(default_folder):
    from transformers import AutoTokenizer

    lite, hf = load_lite_tokenizer(default_folder), AutoTokenizer.from_pretrained(default_folder)
    template = (
        "{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{{ m | tojson }}\n{% endfor %}"
        "{{ ns.n }} {{ bos_token }}{{ eos_token }} {{ extra | tojson(indent=1) }}"
        "{% generation %}{{ dict(a=1) | tojson }}{% endgeneration %}"
        "{{ strftime_now('%Y') | length }}"
    )
    messages = CONVERSATIONS[1] + [{"role": "user", "content": "<b>&'\"é", "name": None}]
    kwargs = {"chat_template": template, "tokenize": False, "extra": {"x": [1, "é"]}}
    text = lite.apply_chat_template(messages, **kwargs)
    assert text == hf.apply_chat_template(messages, **kwargs)
    assert '"<b>&\'\\"é"' in text and "null" not in text
    blocks = (
        "{% for m in messages %}\n"
        "  {% if m.role == 'user' %}\n"
        "U: {{ m.content }}\n"
        "  {% else %}\n"
        "    {{ m.role }}\n"
        "  {% endif %}\n"
        "{% endfor %}\n"
    )
    text = lite.apply_chat_template(messages, chat_template=blocks, tokenize=False)
    assert text == hf.apply_chat_template(messages, chat_template=blocks, tokenize=False)
    assert text.startswith("    system\nU: Fix `x = 1 +`\n")
    failing = "{{ raise_exception('no way') }}"
    with pytest.raises(Exception, match="no way"):
        lite.apply_chat_template(messages, chat_template=failing, tokenize=False)


@pytest.mark.parametrize("mode", ["auto", "template", "starchat", "dialogue"])
def test_chat_format_encodes_the_same(default_folder, starchat_folder, mode):
    from transformers import AutoTokenizer

    for folder in (default_folder, starchat_folder):
        lite, hf = load_lite_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
        if mode == "starchat" and folder == default_folder:
            with pytest.raises(ValueError):
                chat_format_for(lite, mode)
            continue
        ours, theirs = chat_format_for(lite, mode), chat_format_for(hf, mode)
        assert (ours.kind, ours.template) == (theirs.kind, theirs.template)
        assert ours.stop_token_ids == theirs.stop_token_ids and ours.stop_token_ids
        assert ours.stop_strings == theirs.stop_strings
        for conversation in CONVERSATIONS:
            for prompt in (True, False):
                assert ours.encode(conversation, prompt) == theirs.encode(conversation, prompt)
                assert ours.render(conversation, prompt) == theirs.render(conversation, prompt)
    assert chat_format_for(load_lite_tokenizer(starchat_folder), "starchat").stop_token_ids == [
        2,
        49155,
    ]


def test_folder_without_tokenizer_json(tmp_path, default_folder):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert not can_load_lite(tmp_path)
    with pytest.raises(ValueError, match=r"has no tokenizer\.json") as error:
        load_lite_tokenizer(tmp_path)
    assert str(tmp_path) in str(error.value) and str(error.value).count(". ") == 0
    assert can_load_lite(default_folder)


def test_model_specific_tokenizer_classes_are_left_to_transformers(tmp_path, default_folder):
    shutil.copy(f"{default_folder}/tokenizer.json", tmp_path)
    config = json.loads(open(f"{default_folder}/tokenizer_config.json").read())
    for name, expected in [
        ("LlamaTokenizer", False),
        ("PreTrainedTokenizerFast", True),
        (None, False),
    ]:
        (tmp_path / "tokenizer_config.json").write_text(
            json.dumps({**config, "tokenizer_class": name})
        )
        assert can_load_lite(tmp_path) is expected, name
    remote = {**config, "auto_map": {"AutoTokenizer": ["x.Tok", None]}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(remote))
    assert not can_load_lite(tmp_path)


def test_importing_and_using_it_needs_no_transformers_or_torch(default_folder):
    code = (
        "import sys\n"
        "from model.prompt.tokenizer import load_lite_tokenizer\n"
        f"tok = load_lite_tokenizer({default_folder!r})\n"
        "tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False)\n"
        "tok.decode(tok.encode('hi'))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'torch'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
