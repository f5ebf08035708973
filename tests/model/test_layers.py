"""The house is one-way: ``lsp_server -> model``, ``training -> model``, and inside ``model``
the layers ``backends -> serving -> runtime -> prompt``.

Every module of the three packages is parsed with ``ast`` and every import counts, the ones
inside functions included (a function-level import is still a dependency, only a later one).
The rules, in each package: every import inside the package names a module that exists (a
function-level import of a moved module would only fail when it runs); no import cycle
between modules (in ``lsp_server``: features may import core modules and each other, but
never round in a circle); nothing from the packages it must not know (``model`` imports
neither ``lsp_server`` nor ``training``, ``training`` never ``lsp_server``, ``lsp_server``
never ``training``). In ``model`` besides: no layer imports a higher one, and no torch or
transformers anywhere in the prompt layer. The checker itself is tried on small packages
with one break of each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("prompt", "runtime", "serving", "backends")  # lowest first
HEAVY = ("torch", "transformers")
#: The packages checked, and the ones each must never import.
FORBIDDEN = {"model": ("lsp_server", "training"), "lsp_server": ("training",), "training": ("lsp_server",)}
MODULE = "module:"  # marks the module part of a `from X import y` inside the package


def modules(root: Path, package: str = "model") -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` under ``root`` (packages by __init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, package: str = "model") -> list[tuple[str, int]]:
    """(absolute module name, line) for each import in the file, wherever it stands."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == package:
                found.append((MODULE + target, node.lineno))  # must exist (checked by violations)
            # `from pkg import mod` depends on the module; `from mod import name` on mod.
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            found.append((target, node.lineno))
    return found


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def violations(root: Path, package: str = "model") -> list[str]:
    mods = modules(root, package)
    problems = []
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        where = path.relative_to(root)
        if package == "model" and layer_of(name) is None and path.name != "__init__.py":
            problems.append(f"{where}: a module outside the layers {LAYERS}")
        for target, line in imports(name, path, package):
            if target.startswith(MODULE):
                if target[len(MODULE):] not in mods:
                    problems.append(f"{where}:{line}: imports {target[len(MODULE):]}, which does not exist")
                continue
            top = target.split(".")[0]
            if top in FORBIDDEN[package]:
                problems.append(f"{where}:{line}: imports {target} ({package} imports none of "
                                f"{', '.join(FORBIDDEN[package])})")
            if package == "model" and top in HEAVY and layer_of(name) == 0:
                problems.append(f"{where}:{line}: imports {target} (the prompt layer is torch-free)")
            if target not in mods or target == name:
                continue  # a name inside a module, or outside the package
            graph[name].add(target)
            own, theirs = layer_of(name), layer_of(target)
            if package == "model" and own is not None and theirs is not None and theirs > own:
                problems.append(f"{where}:{line}: {LAYERS[own]} imports {target} from the higher "
                                f"layer {LAYERS[theirs]}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return list(dict.fromkeys(problems))  # `from torch import x` names torch twice


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected group of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, set(group), min(group)) for group in groups]


def _cycle_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """The shortest import path from ``start`` back to itself inside one group."""
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


@pytest.mark.parametrize(("package", "known"), [("model", "model.serving.worker"),
                                              ("lsp_server", "lsp_server.features.early_answer"),
                                              ("training", "training.evaluation.humaneval")])
def test_each_package_keeps_the_house_one_way(package, known):
    assert known in modules(ROOT, package)  # the walk sees the tree
    problems = violations(ROOT, package)
    assert not problems, "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(("files", "expected"), [
    ({"model/prompt/a.py": "def f():\n    from ..serving import b\n", "model/serving/b.py": ""},
     "prompt imports model.serving.b from the higher layer serving"),
    ({"model/runtime/a.py": "from . import b\n", "model/runtime/b.py": "def f():\n    from .a import x\n"},
     "import cycle: model.runtime.a -> model.runtime.b -> model.runtime.a"),
    ({"model/serving/a.py": "def f():\n    import lsp_server.cli\n"}, "imports lsp_server.cli"),
    ({"model/serving/a.py": "from . import b\n", "model/serving/b.py": "from . import c\n",
      "model/serving/c.py": "def f():\n    from .a import x\n"},
     "import cycle: model.serving.a -> model.serving.b -> model.serving.c -> model.serving.a"),
    ({"model/runtime/a.py": "from training.train import main\n"}, "imports training.train"),
    ({"model/prompt/a.py": "def f():\n    from transformers import AutoTokenizer\n"},
     "imports transformers (the prompt layer is torch-free)"),
    ({"model/flat.py": ""}, "model/flat.py: a module outside the layers"),
    ({"model/serving/a.py": "def f():\n    from .gone import x\n"},
     "imports model.serving.gone, which does not exist"),
])
def test_the_check_finds_each_kind_of_break(tmp_path, files, expected):
    inits = {f"model/{layer}/__init__.py": "" for layer in LAYERS} | {"model/__init__.py": ""}
    _write(tmp_path, inits | files)
    problems = violations(tmp_path)
    assert any(expected in p for p in problems), problems


def test_the_check_accepts_imports_downwards(tmp_path):
    inits = {f"model/{layer}/__init__.py": "" for layer in LAYERS} | {"model/__init__.py": ""}
    _write(tmp_path, inits | {
        "model/backends/a.py": "from ..serving.b import x\nimport torch\n",
        "model/serving/b.py": "def f():\n    from ..runtime import c\n",
        "model/runtime/c.py": "from ..prompt.d import y\nimport torch\n",
        "model/prompt/d.py": "import re\n",
    })
    assert violations(tmp_path) == []


OTHER_PACKAGES = [
    # lsp_server: features import core modules and each other, never in a circle
    ("lsp_server", {"lsp_server/features/a.py": "from ..context import flatten\nfrom .b import y\n",
                    "lsp_server/features/b.py": "def f():\n    from . import a\n",
                    "lsp_server/context.py": ""},
     "import cycle: lsp_server.features.a -> lsp_server.features.b -> lsp_server.features.a"),
    ("lsp_server", {"lsp_server/server.py": "from .features import a\n",
                    "lsp_server/features/a.py": "from ..server import Server\n"},
     "import cycle: lsp_server.features.a -> lsp_server.server -> lsp_server.features.a"),
    ("lsp_server", {"lsp_server/cli.py": "def f():\n    from training import train\n"}, "imports training"),
    ("lsp_server", {"lsp_server/cli.py": "from .gone import x\n"}, "imports lsp_server.gone, which does not exist"),
    ("training", {"training/evaluate.py": "def f():\n    from lsp_server.context import flatten\n"},
     "imports lsp_server.context (training imports none of lsp_server)"),
    ("training", {"training/a.py": "import training.b\n", "training/b.py": "from training import a\n"},
     "import cycle: training.a -> training.b -> training.a"),
]


@pytest.mark.parametrize(("package", "files", "expected"), OTHER_PACKAGES)
def test_the_check_finds_breaks_in_lsp_server_and_training(tmp_path, package, files, expected):
    _write(tmp_path, {f"{package}/__init__.py": "", f"{package}/features/__init__.py": ""} | files)
    problems = violations(tmp_path, package)
    assert any(expected in p for p in problems), problems


def test_features_may_import_core_modules_and_each_other_one_way(tmp_path):
    _write(tmp_path, {"lsp_server/__init__.py": "", "lsp_server/features/__init__.py": "",
                      "lsp_server/protocol.py": "from .features import a, b\n",
                      "lsp_server/features/a.py": "from .b import x\nfrom ..context import y\nimport model.serving\n",
                      "lsp_server/features/b.py": "from .. import context\n",
                      "lsp_server/context.py": "import re\n"})
    assert violations(tmp_path, "lsp_server") == []
