"""Test helper (not a fake): records which files each launched rank opens for writing.

Put this folder on PYTHONPATH with RANK_AUDIT_WATCH=DIR and RANK_AUDIT_LOG=DIR; every
process with a RANK writes ``rank<N>.txt`` into the log folder at exit, one path per line:
the files under the watched folder it opened for writing or created (Python-level opens and
os calls, through ``sys.addaudithook``).
"""

import atexit
import os
import sys

_WATCH = os.environ.get("RANK_AUDIT_WATCH")
_LOG = os.environ.get("RANK_AUDIT_LOG")
_RANK = os.environ.get("RANK")

if _WATCH and _LOG and _RANK is not None:
    _watch = os.path.realpath(_WATCH)
    _seen: set[str] = set()
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _note(path) -> None:
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if full == _watch or full.startswith(_watch + os.sep):
            _seen.add(full)

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing:
                _note(path)
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.copyfile"):
            _note(args[0] if event != "shutil.copyfile" else args[1])
            if event in ("os.rename", "os.replace"):
                _note(args[1])

    def _dump():
        os.makedirs(_LOG, exist_ok=True)
        with open(os.path.join(_LOG, f"rank{_RANK}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in sorted(_seen)))

    sys.addaudithook(_hook)
    atexit.register(_dump)
