"""Run a Python command with a watch on heavy imports: who imported torch or transformers?

``guarded_command(record, [module, *args])`` is the command line of ``python -m module args``
with an import hook installed first; the hook appends to ``record`` the stack of every
import of ``torch`` or ``transformers`` (and lets the import go on, so behaviour is
unchanged). Only that process is watched: the workers it starts are not (they may need
torch to run the model). ``heavy_imports(record)`` reads what was recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

WATCHED = ("torch", "transformers")

_HOOK = """
import runpy, sys, traceback
record, module = sys.argv[1], sys.argv[2]
del sys.argv[1:3]

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in seen:
            seen.add(name)
            with open(record, 'a', encoding='utf-8') as f:
                f.write('import ' + name + ' from:\\n' + ''.join(traceback.format_list(
                    [fr for fr in traceback.extract_stack()[:-1] if not fr.filename.startswith('<frozen')])) + '\\n')
        return None

seen = set()
WATCHED = %r
sys.meta_path.insert(0, Watch())
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def guarded_command(record: Path, module_and_args: list[str]) -> list[str]:
    """``python -m MODULE ARGS…`` with the import watch writing to ``record``."""
    module, *args = module_and_args
    return [sys.executable, "-c", _HOOK % (WATCHED,), str(record), module, *args]


def heavy_imports(record: Path) -> str:
    """What the watch recorded: empty when neither torch nor transformers was imported."""
    return record.read_text(encoding="utf-8") if record.exists() else ""
