"""``textDocument/codeAction``: StarChat actions on a non-empty range, without the model."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from .. import commands

KINDS = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]


def _value(kind: Any) -> str:
    return str(getattr(kind, "value", kind))


def _wanted(kind: Any, only: list[str] | None) -> bool:
    # With `only`, the client asks for these kinds (and their sub-kinds) alone.
    if not only:
        return True
    if kind is None:
        return False
    name = _value(kind)
    return any(name == o or name.startswith(o + ".") for o in only)


def code_actions(server: Any, params: types.CodeActionParams) -> list[types.CodeAction]:
    """Explain, Fix, Write tests and Add docstring for the selection (empty: nothing)."""
    rng = params.range
    if rng.start == rng.end or params.text_document.uri not in server.workspace.text_documents:
        return []
    document = {"uri": params.text_document.uri}
    range_json = {
        "start": {"line": rng.start.line, "character": rng.start.character},
        "end": {"line": rng.end.line, "character": rng.end.character},
    }
    diagnostics = list(params.context.diagnostics or [])
    fix_args: dict[str, Any] = {"textDocument": document, "range": range_json}
    if diagnostics:
        fix_args["diagnostics"] = server.converter.unstructure(diagnostics)
    plain = {"textDocument": document, "range": range_json}

    candidates = [
        (commands.EXPLAIN, None, plain, None),
        (
            commands.FIX,
            types.CodeActionKind.QuickFix if diagnostics else types.CodeActionKind.RefactorRewrite,
            fix_args,
            diagnostics or None,
        ),
        (commands.WRITE_TESTS, None, plain, None),
        (commands.ADD_DOCSTRING, types.CodeActionKind.RefactorRewrite, plain, None),
    ]
    only = [_value(k) for k in params.context.only] if params.context.only else None
    actions = []
    for command, kind, args, diags in candidates:
        if not _wanted(kind, only):
            continue
        title = commands.ACTION_TITLES[command]
        actions.append(
            types.CodeAction(
                title=title,
                kind=kind,
                diagnostics=diags,
                command=types.Command(title=title, command=command, arguments=[args]),
            )
        )
    return actions
