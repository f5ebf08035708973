"""model.runtime.paths: cache folders keyed by a file's identity, published whole or not at all."""

from __future__ import annotations

import os

import pytest

from model.runtime.paths import cache_dir, file_cache_folder, publish_folder


def test_a_published_folder_appears_whole_and_the_first_one_stays(tmp_path):
    target = tmp_path / "cache" / "thing"
    with publish_folder(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with publish_folder(target) as tmp:  # another process finished first: theirs is kept
        (tmp / "a.txt").write_text("second")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]  # no temporary left


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "thing"
    with pytest.raises(RuntimeError), publish_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_the_cache_folder_follows_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCHAT_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF one")
    folder = file_cache_folder(source, "models", "1")
    assert folder.parent == cache_dir() / "models" and folder.name.startswith("model-")
    assert file_cache_folder(source, "models", "1") == folder
    assert file_cache_folder(source, "models", "2") != folder  # a new format, a new folder
    source.write_bytes(b"GGUF two, longer")
    os.utime(source, ns=(1, 1))
    assert file_cache_folder(source, "models", "1") != folder  # a changed file, a new folder
