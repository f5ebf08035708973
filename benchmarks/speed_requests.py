"""The requests of ``bench_speed.py``'s speculation section: each kind the editor sends.

Fix, Add docstring, Write tests and Explain are built as the language server builds them
(``lsp_server.context``: the same instruction, file header and fenced selection, the product's
system prompt); chat asks for new code (nothing to copy); a code completion is the worker's
``fim`` request at a line start of a standard-library file; the copy-heavy ones are where the
embedded 135M model does copy: a file of repetitive structure to continue, and Add docstring
on a longer function.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from lsp_server.context import Selection, build_request, build_user_parts
from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = (ROOT / "lsp_server" / "samples" / "buggy_stats.py").read_text()


def _selection(text: str, path: str = "buggy_stats.py") -> Selection:
    lines = text.count("\n")
    return Selection(path=path, language_id="python", start_line=0, end_line=lines, text=text, before="", after="")


def _command(task: str, code: str, max_new_tokens: int, message: str | None = None) -> dict:
    parts = build_user_parts(task, _selection(code), message=message)
    return build_request(DEFAULT_SYSTEM_PROMPT, [], parts, {"max_new_tokens": max_new_tokens, "temperature": 0.0})


def _stdlib(name: str) -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / name).read_text()


def repetitive_file(entries: int = 12) -> str:
    """A module of near-identical functions: what a typist's next one copies."""
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
             "lambda_", "mu", "nu", "xi", "omicron", "pi"]
    out = ['"""Handlers of the settings page, one per field."""\n\nimport logging\n\nlog = logging.getLogger(__name__)\n\n']
    for name in names[:entries]:
        out.append(f"def handle_{name}(settings, value):\n"
                   f"    \"\"\"Set the {name} field of ``settings`` to ``value`` and log the change.\"\"\"\n"
                   f"    old = settings.get(\"{name}\")\n"
                   f"    settings[\"{name}\"] = value\n"
                   f"    log.info(\"{name}: %r -> %r\", old, value)\n"
                   f"    return old\n\n\n")
    return "".join(out)


def requests(max_new_tokens: int) -> dict[str, dict]:
    """Kind -> worker request (greedy)."""
    average = SAMPLE[SAMPLE.index("def average"):SAMPLE.index("def largest")].rstrip() + "\n"
    dedent = _stdlib("textwrap.py")
    dedent = dedent[dedent.index("def dedent("):dedent.index("\ndef ", dedent.index("def dedent(") + 1)]
    file = repetitive_file()
    return {
        "fix": _command("fix", average, max_new_tokens),
        "add_docstring": _command("addDocstring", SAMPLE[SAMPLE.index("def largest"):], max_new_tokens),
        "write_tests": _command("writeTests", average, max_new_tokens),
        "explain": _command("explain", average, max_new_tokens),
        "chat": {"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                              {"role": "user", "content": "Write a Python function that parses an INI file into a "
                                                          "dict of dicts, with comments."}],
                 "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}},
        "chat_about_selection": _command("chat", average, max_new_tokens, message="Why can this function fail?"),
        "completion": {"fim": {"prefix": dedent[:dedent.index("    for line in")], "suffix": "", "path": "textwrap.py"},
                       "params": {"max_new_tokens": 48, "temperature": 0.0, "stop": ["\n\n"]}},
        "copy_heavy_add_docstring": _command("addDocstring", dedent, max_new_tokens),
        "copy_heavy_repetitive_file": {"fim": {"prefix": file + "def handle_", "suffix": "", "path": "handlers.py"},
                                       "params": {"max_new_tokens": max_new_tokens, "temperature": 0.0}},
    }


def copied_share(prompt_ids: list[int], answer_ids: list[int], run: int = 8) -> float:
    """The share of the answer's tokens that lie in a run of at least ``run`` tokens found
    verbatim in the prompt: how much of the answer copies its prompt."""
    if not answer_ids:
        return 0.0
    grams = {tuple(prompt_ids[i:i + run]) for i in range(len(prompt_ids) - run + 1)}
    copied = [False] * len(answer_ids)
    for i in range(len(answer_ids) - run + 1):
        if tuple(answer_ids[i:i + run]) in grams:
            for j in range(i, i + run):
                copied[j] = True
    return round(sum(copied) / len(answer_ids), 3)
