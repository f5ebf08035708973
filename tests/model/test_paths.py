"""model.runtime.paths: cache folders keyed by a file's identity, published whole or not at all;
scratch folders removed even when a signal stops the worker inside them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from model.runtime.paths import cache_dir, file_cache_folder, private_folder, publish_folder


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


def test_a_private_folder_is_the_users_alone_and_goes_away(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with private_folder("starchat-test-") as folder:
        assert folder.parent == tmp_path and folder.name.startswith("starchat-test-")
        assert folder.stat().st_mode & 0o777 == 0o700
        (folder / "http.sock").write_text("x")
    assert list(tmp_path.iterdir()) == []


def test_a_worker_stopped_by_sigterm_inside_scratch_folders_leaves_none(tmp_path):
    """The worker's SIGTERM handler ends the process with os._exit (no finally runs): it must
    remove llama.cpp's listener folder and a half-published cache folder first. The child
    stops itself inside both blocks, as a user's kill during a model load would."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        from model.runtime.paths import private_folder, publish_folder
        from model.serving.worker import _exit_now
        signal.signal(signal.SIGTERM, _exit_now)
        with publish_folder(Path({str(tmp_path / "cache" / "thing")!r})) as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            with private_folder("starchat-llamacpp-") as private:
                (private / "http.sock").write_text("x")
                print(tmp, private, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
        sys.exit(3)  # not reached: the handler exits 0
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr
    half, private = done.stdout.split()
    assert half.startswith(str(tmp_path / "cache" / "thing.")) and private.startswith(str(tmp_path / "tmp"))
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "cache").iterdir()) == []
