"""The Python floor in pyproject.toml is honest: no module uses a call newer than it.

The code is checked for the standard-library names each Python release added that this
kind of project reaches for (a list, not a full analysis: add to it when a newer call comes
in). ``Task.uncancel`` (3.11) is what made ">=3.10" untrue.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lsp_server", "model", "training", "benchmarks")
# attribute or name -> the first Python that has it
NEWER_NAMES = {
    "uncancel": (3, 11), "TaskGroup": (3, 11), "ExceptionGroup": (3, 11), "BaseExceptionGroup": (3, 11),
    "add_note": (3, 11), "StrEnum": (3, 11), "LiteralString": (3, 11), "reveal_type": (3, 11),
    "assert_never": (3, 11), "batched": (3, 12), "override": (3, 12), "get_protocol_members": (3, 13),
}
NEWER_MODULES = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}
NEWER_ATTRIBUTES = {("asyncio", "timeout"): (3, 11), ("datetime", "UTC"): (3, 11), ("typing", "Self"): (3, 11)}


def _floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text)
    assert match, "pyproject.toml declares no requires-python floor"
    return int(match.group(1)), int(match.group(2))


def _uses(tree: ast.AST) -> list[tuple[str, tuple[int, int], int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in NEWER_NAMES:
                found.append((node.attr, NEWER_NAMES[node.attr], node.lineno))
            if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in NEWER_ATTRIBUTES:
                found.append((f"{node.value.id}.{node.attr}", NEWER_ATTRIBUTES[(node.value.id, node.attr)], node.lineno))
        elif isinstance(node, ast.Name) and node.id in NEWER_NAMES:
            found.append((node.id, NEWER_NAMES[node.id], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEWER_MODULES:
                found.append((node.module, NEWER_MODULES[node.module], node.lineno))
            for alias in node.names:
                key = (node.module, alias.name)
                if key in NEWER_ATTRIBUTES:
                    found.append((".".join(key), NEWER_ATTRIBUTES[key], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, NEWER_MODULES[a.name], node.lineno) for a in node.names if a.name in NEWER_MODULES]
        elif type(node).__name__ == "TryStar":
            found.append(("except*", (3, 11), node.lineno))
        elif type(node).__name__ == "TypeAlias":
            found.append(("type statement", (3, 12), node.lineno))
    return found


def test_no_module_needs_a_newer_python_than_pyproject_declares():
    floor = _floor()
    too_new = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, version, line in _uses(ast.parse(path.read_text(encoding="utf-8"))):
                if version > floor:
                    too_new.append(f"{path.relative_to(ROOT)}:{line} uses {name} (Python {version[0]}.{version[1]})")
    assert not too_new, f"requires-python says >={floor[0]}.{floor[1]}, but: " + "; ".join(too_new)


def test_the_check_sees_what_it_looks_for():
    code = "import tomllib\nfrom datetime import UTC\nasync def f(t):\n    t.uncancel()\n    async with asyncio.timeout(1): pass\n"
    assert {name for name, _, _ in _uses(ast.parse(code))} == {"tomllib", "datetime.UTC", "uncancel", "asyncio.timeout"}
