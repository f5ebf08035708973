"""Where the model layer keeps files, and how it writes them: the cache dir, the user's data
dir, folders published into the cache atomically, private scratch folders, and the address
of a Unix socket. Standard library only; imported by the runtime modules that cache things,
by the worker's protocol, and by the language server and training for the data dir they share."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The model cache: ``$STARCHAT_CACHE_DIR`` or ``$XDG_CACHE_HOME/starchat``."""
    if os.environ.get("STARCHAT_CACHE_DIR"):
        return Path(os.environ["STARCHAT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "starchat"


def data_dir() -> Path:
    """The user's data (conversations, the editor's feedback log): ``$STARCHAT_DATA_DIR``, else
    ``$XDG_DATA_HOME/starchat`` (``~/.local/share/starchat``)."""
    if os.environ.get("STARCHAT_DATA_DIR"):
        return Path(os.environ["STARCHAT_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "starchat"


def file_cache_folder(source: Path, area: str, version: str) -> Path:
    """``cache_dir()/area/STEM-KEY`` for what is made from ``source``: the key is the file's
    identity (path, size, modification time) and ``version``, so a changed file or format
    gets a new folder."""
    st = source.stat()
    identity = f"{version}:{source.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_dir() / area / f"{source.stem}-{key}"


#: Scratch folders this process has open (``private_folder``, ``publish_folder``): a worker
#: stopped by a signal leaves through ``os._exit``, which runs no ``finally``, so its handler
#: calls ``remove_scratch`` first.
_SCRATCH: set[Path] = set()
# A folder is created and registered under the lock, so a signal handler (which runs on the
# main thread while another thread, e.g. a model load, creates one) never misses it.
_SCRATCH_LOCK = threading.RLock()


def remove_scratch() -> None:
    """Remove every scratch folder this process still has open (for a signal handler that is
    about to ``os._exit``)."""
    with _SCRATCH_LOCK:
        for folder in list(_SCRATCH):
            shutil.rmtree(folder, ignore_errors=True)
            _SCRATCH.discard(folder)


@contextlib.contextmanager
def _scratch(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A new temp folder (``tempfile.mkdtemp``), registered until the block ends."""
    with _SCRATCH_LOCK:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        _SCRATCH.add(folder)
    try:
        yield folder
    finally:
        _SCRATCH.discard(folder)


@contextlib.contextmanager
def private_folder(prefix: str) -> Iterator[Path]:
    """A new temp folder only this user can enter (``mkdtemp`` makes it 0700), removed when
    the block ends (or by ``remove_scratch`` if the process is stopped inside it)."""
    with _scratch(prefix) as folder:
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def publish_folder(target: Path) -> Iterator[Path]:
    """A temporary folder next to ``target`` to write into; renamed to ``target`` when the
    block ends without an error, so readers see the whole folder or none. If another process
    published ``target`` first, theirs is kept; on an error the temporary folder is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _scratch(target.name + ".", target.parent) as tmp:
        try:
            yield tmp
            try:
                tmp.rename(target)
            except OSError:  # another process finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
SUN_PATH_MAX = 100


@contextlib.contextmanager
def unix_address(path: str | Path) -> Iterator[str]:
    """The address to ``bind``/``connect`` for the Unix socket at ``path``.

    A runtime or temp dir deep enough to push the socket's path past the AF_UNIX limit
    ("AF_UNIX path too long") is reached through an open descriptor of the socket's folder
    (``/proc/self/fd/N/NAME``, Linux), so the socket stays where it belongs and every client
    finds it at the same path. Elsewhere, and for short paths, the path itself.
    """
    path = Path(path)
    text = str(path)
    if len(os.fsencode(text)) <= SUN_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
