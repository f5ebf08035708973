"""Dialogue loading, validation errors and the OpenAssistant tree converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import DialogueError, load_dialogues, oasst_trees_to_dialogues

DATA = Path(__file__).resolve().parents[2] / "training" / "data" / "code_assistant.jsonl"
GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_bundled_dataset_is_valid_and_sized():
    dialogues = load_dialogues(DATA)
    assert 250 <= len(dialogues) <= 600
    assert all(m["role"] in ("system", "user", "assistant") for d in dialogues for m in d["messages"])
    assert sum(len(d["messages"]) > 3 for d in dialogues) >= 30  # some multi-turn


def test_server_export_format_loads_without_conversion(tmp_path):
    # What starchat.exportConversations writes: system + user/assistant turns, extra keys kept out.
    exported = {"id": "c1", "messages": [
        {"role": "system", "content": "You are StarChat."},
        {"role": "user", "content": "Explain `x = 1`"},
        {"role": "assistant", "content": "It binds 1 to x."},
    ]}
    rows = load_dialogues(write_jsonl(tmp_path / "export.jsonl", [exported]))
    assert rows == [{"messages": exported["messages"]}]


def test_json_parquet_and_directory_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([GOOD, GOOD]))
    assert len(load_dialogues(tmp_path / "a.json")) == 2
    pq.write_table(pa.Table.from_pylist([GOOD] * 3), tmp_path / "b.parquet")
    assert load_dialogues(tmp_path / "b.parquet")[2] == GOOD
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [GOOD])
    write_jsonl(folder / "test.jsonl", [GOOD, GOOD])
    assert len(load_dialogues(folder)) == 1
    assert len(load_dialogues(folder, split="test")) == 2


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"text": "hi"}, "missing 'messages'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
        ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}, "empty content"),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                       {"role": "assistant", "content": "c"}]}, "both user turns in a row"),
    ],
)
def test_bad_rows_name_line_and_reason(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, row])
    with pytest.raises(DialogueError) as info:
        load_dialogues(path)
    message = str(info.value)
    assert "bad.jsonl line 3" in message and reason in message
    assert "\n" not in message


def test_missing_file_and_bad_json_are_clear(tmp_path):
    with pytest.raises(DialogueError, match="no such file"):
        load_dialogues(tmp_path / "nope.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"messages": [\n')
    with pytest.raises(DialogueError, match="line 1: not valid JSON"):
        load_dialogues(tmp_path / "broken.jsonl")


def oasst(mid, parent, role, text, lang="en", rank=None, deleted=False):
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text,
            "lang": lang, "rank": rank, "deleted": deleted}


def test_oasst_follows_best_ranked_branch_and_filters_language():
    rows = [
        oasst("r", None, "prompter", "How do I sort a list?"),
        oasst("a2", "r", "assistant", "second best", rank=1),
        oasst("a1", "r", "assistant", "Use sorted(items).", rank=0),
        oasst("a3", "r", "assistant", "deleted best", rank=None, deleted=True),
        oasst("p1", "a1", "prompter", "In reverse?"),
        oasst("b1", "p1", "assistant", "sorted(items, reverse=True)", rank=0),
        oasst("p2", "b1", "prompter", "Thanks!"),  # trailing prompter turn is cut
        oasst("x", None, "prompter", "Wie sortiere ich?", lang="de"),
        oasst("xa", "x", "assistant", "Mit sorted().", lang="de", rank=0),
    ]
    dialogues = oasst_trees_to_dialogues(rows, lang="en")
    assert dialogues == [{"messages": [
        {"role": "user", "content": "How do I sort a list?"},
        {"role": "assistant", "content": "Use sorted(items)."},
        {"role": "user", "content": "In reverse?"},
        {"role": "assistant", "content": "sorted(items, reverse=True)"},
    ]}]
    assert len(oasst_trees_to_dialogues(rows, lang=None)) == 2
    assert oasst_trees_to_dialogues(rows, lang="de")[0]["messages"][1]["content"] == "Mit sorted()."


def test_oasst_tree_without_answer_gives_nothing():
    assert oasst_trees_to_dialogues([oasst("r", None, "prompter", "Hello?")]) == []
