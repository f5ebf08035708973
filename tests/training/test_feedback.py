"""``training.feedback``: the editor's feedback log as examples, masked like the chat recipe,
on the embedded model's real tokenizer."""

from __future__ import annotations

import copy
import logging

import pytest

from model.prompt.chat_format import encode_text
from model.prompt.fim import build_fim_prompt
from model.runtime.feedback_log import append_row, log_path
from training.feedback import feedback_examples
from training.tokenize import IGNORE_INDEX, tokenize_dialogue

PREFIX = "def count_lines(path):\n    with open(path) as f:\n        return len(f.rea"
SUFFIX = "\n\n\ndef main():\n    pass\n"
COMPLETION = "d().splitlines())"
SYSTEM = {"role": "system", "content": "You are a helpful coding assistant."}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCHAT_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "project"
    root.mkdir()
    return root


def write(root, row: dict) -> None:
    assert append_row(log_path(root), {"workspace": str(root), "time": 1.0, **row}, 10**6)


def completion_row(prefix=PREFIX, text=COMPLETION) -> dict:
    return {"kind": "completion", "path": "lines.py", "prefix": prefix, "suffix": SUFFIX, "completion": text}


def split(example: dict) -> int:
    """Where the prompt ends: labels are -100 up to there and real ids after (asserted)."""
    labels = example["labels"]
    assert len(labels) == len(example["input_ids"])
    n = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in labels[:n])
    assert labels[n:] == example["input_ids"][n:]
    return n


def test_an_accepted_completion_is_the_prompt_the_editor_sent_then_the_healed_text(tokenizer, workspace):
    write(workspace, completion_row())
    (example,) = feedback_examples(tokenizer, 256, workspace)
    n = split(example)
    # The embedded model has no FIM tokens: a prefix-only prompt whose last token ("rea") was
    # taken off for healing, and goes back in front of the accepted text.
    prompt = build_fim_prompt(tokenizer, {"prefix": PREFIX, "suffix": SUFFIX, "path": "lines.py",
                                          "context_tokens": 256 - len(encode_text(tokenizer, COMPLETION)) - 1})
    assert prompt.template == "none" and prompt.heal == "rea"
    assert example["input_ids"][:n] == prompt.ids
    assert example["labels"][n:] == encode_text(tokenizer, prompt.heal + COMPLETION)
    assert tokenizer.decode(example["input_ids"]) == PREFIX + COMPLETION  # the file as it now is
    assert tokenizer.decode(example["labels"][n:]) == prompt.heal + COMPLETION


def test_a_fim_model_gets_the_suffix_and_no_healing(tokenizer, workspace):
    starcoder = copy.deepcopy(tokenizer)
    starcoder.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]})
    write(workspace, completion_row())
    (example,) = feedback_examples(starcoder, 256, workspace)
    n = split(example)
    assert example["labels"][n:] == encode_text(starcoder, COMPLETION)
    prompt = starcoder.decode(example["input_ids"][:n])
    assert prompt.endswith(PREFIX + "<fim_suffix>" + SUFFIX + "<fim_middle>")
    assert prompt.startswith("<file_sep>lines.py\n<fim_prefix>")


def test_a_long_completion_still_fits_max_length(tokenizer, workspace):
    write(workspace, completion_row(text="x = 1\n" * 200))
    (example,) = feedback_examples(tokenizer, 128, workspace)
    n = split(example)
    assert len(example["input_ids"]) == 128  # the target is cut, the prompt kept whole
    healed = "rea"  # the prefix's last token, healed
    assert tokenizer.decode(example["input_ids"][:n]) + healed == PREFIX
    assert example["labels"][n:] == encode_text(tokenizer, healed + "x = 1\n" * 200)[: 128 - n]


def test_edits_and_the_last_turn_of_each_conversation_are_dialogues(tokenizer, workspace):
    fix = [SYSTEM, {"role": "user", "content": "Fix the bug in this python code:\n```python\nx = 1 +\n```"},
           {"role": "assistant", "content": "```python\nx = 1 + 1\n```"}]
    turn1 = [SYSTEM, {"role": "user", "content": "What is a list?"}, {"role": "assistant", "content": "A sequence."}]
    turn2 = [*turn1, {"role": "user", "content": "And a tuple?"}, {"role": "assistant", "content": "Immutable."}]
    other = [SYSTEM, {"role": "user", "content": "Explain x"}, {"role": "assistant", "content": "x is one."}]
    write(workspace, {"kind": "edit", "command": "fix", "messages": fix})
    write(workspace, {"kind": "chat", "command": "chat", "conversation": "c1", "messages": turn1})
    write(workspace, {"kind": "chat", "command": "explain", "conversation": "c2", "messages": other})
    write(workspace, {"kind": "chat", "command": "chat", "conversation": "c1", "messages": turn2})
    examples = feedback_examples(tokenizer, 512, workspace)
    # c1's first row is inside its second: each reply is learnt once.
    assert examples == [tokenize_dialogue(tokenizer, m, 512) for m in (fix, other, turn2)]
    fix_example = examples[0]
    learnt = [t for t in fix_example["labels"] if t != IGNORE_INDEX]
    assert tokenizer.decode(learnt) == "```python\nx = 1 + 1\n```<|im_end|>"  # the reply and its end only


def test_only_this_workspace_and_a_bad_line_is_skipped(tokenizer, workspace, caplog):
    other = workspace.parent / "elsewhere"
    other.mkdir()
    write(other, completion_row())
    write(workspace, completion_row())
    with log_path(workspace).open("ab") as f:
        f.write(b'{"kind": "completion", "prefix": \n')
    write(workspace, completion_row(prefix="import os\nos.pa", text="th.join"))
    with caplog.at_level(logging.WARNING):
        examples = feedback_examples(tokenizer, 256, workspace)
    assert len(examples) == 2
    assert [tokenizer.decode(e["input_ids"]) for e in examples] == [PREFIX + COMPLETION, "import os\nos.path.join"]
    assert "skipped 1 line(s)" in caplog.text
    assert feedback_examples(tokenizer, 256, workspace.parent / "nothing-logged") == []
