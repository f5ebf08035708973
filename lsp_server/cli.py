"""The `starchat` command: lsp, chat, ask, feedback, worker, train, eval, export-gguf.

Each subcommand imports what it needs when it runs, so `starchat lsp` starts without
torch. `ask` and `chat` use the local model worker, or with ``--url`` an OpenAI-compatible
server (``model.backends.openai_backend``). Usage errors (unknown model spec, unreadable file, bad
line range, bad url, a model the server does not list) print one sentence and exit with
code 2; a failing worker or an unreachable server exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def _err(text: str) -> None:
    """Messages for the person at the terminal go to stderr; stdout carries only answers."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class UsageError(Exception):
    """Bad input from the user: one sentence, exit code 2."""


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    # Defaults and rules live in model.prompt.params (torch-free); a flag left out is not sent.
    from model.prompt.params import GenerationParams

    d = GenerationParams()
    p.add_argument("--model", default="default", help="model spec: default, a folder, a .gguf file or an HF id")
    p.add_argument("--max-new-tokens", type=int, help=f"most tokens to generate (default {d.max_new_tokens})")
    p.add_argument("--temperature", type=float, help=f"0 = greedy (default {d.temperature:g})")
    p.add_argument("--top-p", type=float, help=f"nucleus sampling (default {d.top_p:g})")
    p.add_argument("--top-k", type=int, help=f"0 = off (default {d.top_k})")
    p.add_argument("--repetition-penalty", type=float, help=f"1 = off (default {d.repetition_penalty:g})")
    p.add_argument("--seed", type=int, help="seed for sampling (default: random)")
    g = p.add_argument_group("OpenAI-compatible server (vLLM, TGI, llama.cpp server, Ollama)")
    g.add_argument("--url", help="the server's API base, e.g. http://gpu-box:8000/v1; "
                                 "when given, the server answers instead of the local worker")
    g.add_argument("--api-model", metavar="NAME",
                   help="the served model's name (default: the one model the server lists)")
    g.add_argument("--api-key-env", metavar="VAR",
                   help="name of the environment variable holding the API key "
                        "(default: STARCHAT_OPENAI_API_KEY)")


_GENERATION_FLAGS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")


def _params(args: argparse.Namespace) -> dict:
    """The request's ``params``: the flags given, checked by the worker's own rules."""
    from model.prompt.params import GenerationParams

    given = {name: getattr(args, name) for name in _GENERATION_FLAGS if getattr(args, name) is not None}
    try:
        return GenerationParams.from_dict(given).to_dict()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _client(args: argparse.Namespace):
    """The local worker's client for ``--model``, or with ``--url`` the OpenAI-compatible one.

    Checks the options first (UsageError); nothing connects until the first request.
    """
    from model.backends.openai_backend import make_client

    if args.url is None:
        for flag in ("api_model", "api_key_env"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} needs --url.")
        return make_client(_check_model(args.model))
    if args.model != "default":
        raise UsageError("--model picks a local model and cannot be combined with --url; "
                         "use --api-model for the server's model name.")
    if not args.url.strip():
        raise UsageError("--url is empty; give the server's API base, e.g. http://127.0.0.1:8000/v1.")
    settings: dict = {"backend": "openai", "url": args.url}
    if args.api_model is not None:
        if not args.api_model.strip():
            raise UsageError("--api-model is empty; give the served model's name or leave the option out.")
        settings["model"] = args.api_model.strip()
    if args.api_key_env is not None:
        if not _ENV_NAME.fullmatch(args.api_key_env.strip()):
            # Never echo the value: people paste the key itself here.
            raise UsageError("--api-key-env takes the name of an environment variable (such as TEAM_KEY), "
                             "not the key itself.")
        settings["api_key_env"] = args.api_key_env.strip()
        if not os.environ.get(settings["api_key_env"], "").strip():
            _err(f"[{settings['api_key_env']} is not set: sending no API key]")
    try:
        return make_client(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _backend_error(exc: Exception, args: argparse.Namespace) -> Exception:
    """Connection failures of the OpenAI-compatible server, worded for the command line."""
    from model.backends.openai_backend import UnknownModelError
    from model.serving.client import WorkerError

    if isinstance(exc, UnknownModelError):  # --api-model names a model the server does not list
        return UsageError(str(exc))
    text = str(exc)
    prefix = "Set the backend's model:"  # model.backends.openai_backend's wording for the settings file
    if args.url is not None and text.startswith(prefix):
        return WorkerError("Pass --api-model NAME:" + text[len(prefix):])
    return exc


def _check_model(spec: str):
    """The ``--model`` text parsed once, here (relative paths against the working directory)."""
    from model.runtime.spec import ModelSpec, ModelSpecError

    try:
        return ModelSpec.parse(spec)
    except ModelSpecError as exc:
        raise UsageError(str(exc)) from None


def _parse_lines(value: str, total: int) -> tuple[int, int]:
    try:
        a, _, b = value.partition("-")
        start, end = int(a), int(b or a)
    except ValueError:
        raise UsageError(f"--lines must look like A-B (for example 10-20), not {value!r}.") from None
    if start < 1 or end < start:
        raise UsageError(f"--lines {value}: the range must start at 1 or later and not end before it starts.")
    if end > total:
        raise UsageError(f"--lines {value}: the file has only {total} lines.")
    return start, end


_LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".rs": "rust", ".go": "go",
              ".c": "c", ".h": "c", ".cpp": "cpp", ".java": "java", ".rb": "ruby", ".sh": "shellscript",
              ".lua": "lua", ".md": "markdown", ".json": "json", ".yaml": "yaml", ".toml": "toml"}


def _file_request(question: str, path: str, lines: str | None, surrounding: int = 20) -> dict:
    """The same structured request the language server sends for a selection."""
    from lsp_server.context import Selection, build_user_parts

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    all_lines = text.splitlines(keepends=True)
    if not all_lines:
        raise UsageError(f"{path} is empty.")
    start, end = _parse_lines(lines, len(all_lines)) if lines else (1, len(all_lines))
    selection = Selection(
        path=path, language_id=_LANGUAGES.get(Path(path).suffix.lower(), "text"),
        start_line=start - 1, end_line=end - 1, text="".join(all_lines[start - 1 : end]),
        before="".join(all_lines[max(0, start - 1 - surrounding) : start - 1]),
        after="".join(all_lines[end : end + surrounding]),
    )
    return {"user_parts": build_user_parts("chat", selection, message=question)}


def _stream(client, request: dict, out=sys.stdout) -> dict:
    """Print deltas as they come; return the done event."""
    from model.serving.client import WorkerError

    for event in client.generate(request):
        kind = event["type"]
        if kind == "delta":
            out.write(event["text"])
            out.flush()
        elif kind == "progress":
            _err(f"[{event['message']}…]")
        elif kind == "error":
            raise WorkerError(event["message"])
        elif kind == "done":
            return event
    raise WorkerError("The worker ended the answer without a result.")


def cmd_ask(args: argparse.Namespace) -> int:
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT
    from model.serving.client import WorkerError

    params = _params(args)
    if args.lines and not args.file:
        raise UsageError("--lines needs --file.")
    if not args.question.strip():
        raise UsageError("The question is empty.")
    if args.file:
        request = _file_request(args.question, args.file, args.lines)
        request["system"] = DEFAULT_SYSTEM_PROMPT
    else:
        request = {"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                {"role": "user", "content": args.question}]}
    request["params"] = params
    with _client(args) as client:
        try:
            done = _stream(client, request)
            info = client.info() if args.stats else {}
            engine = info.get("engine") or info.get("backend")  # llama.cpp, torch or openai
        except WorkerError as exc:
            raise _backend_error(exc, args) from None
    sys.stdout.write("\n")
    if done.get("truncated"):
        _err("[cut to fit the context window: " + "; ".join(done["truncated"]) + "]")
    if args.stats:
        u = done["usage"]
        stats = {"ttft_s": u["ttft_s"], "tokens": u["tokens"], "tok_per_s": u["tok_per_s"],
                 "prompt_tokens": u["prompt_tokens"], "engine": engine}
        # the whole answer's seconds, and llama.cpp's threads (fewer while the machine is busy)
        stats.update({k: u[k] for k in ("total_s", "threads") if k in u})
        _err(json.dumps(stats))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from model.backends.openai_backend import OpenAIBackendError
    from model.prompt.chat_format import DEFAULT_SYSTEM_PROMPT

    params = _params(args)
    history: list[dict] = []
    with _client(args) as client:
        if args.url is not None:  # an unreachable server fails now, not after the first question
            try:
                client.connect()
            except OpenAIBackendError as exc:
                raise _backend_error(exc, args) from None
        _err("StarChat — /new starts over, /exit or Ctrl-D quits, Ctrl-C stops an answer.")
        while True:
            try:
                line = input("you> ")
            except (EOFError, KeyboardInterrupt):
                _err("")
                return 0
            if line.strip() in ("/exit", "/quit"):
                return 0
            if line.strip() == "/new":
                history = []
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            request = {"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *history], "params": params}
            reply: list[str] = []
            try:
                for event in client.generate(request):
                    if event["type"] == "delta":
                        reply.append(event["text"])
                        sys.stdout.write(event["text"])
                        sys.stdout.flush()
                    elif event["type"] == "error":
                        _err(f"\n[error: {event['message']}]")
            except KeyboardInterrupt:  # stops this answer (the generator sends cancel), not the chat
                _err("\n[stopped]")
            except OpenAIBackendError as exc:  # the server went away mid-chat; the next turn reconnects
                _err(f"\n[error: {exc}]")
            sys.stdout.write("\n")
            if reply:
                history.append({"role": "assistant", "content": "".join(reply)})
            else:
                history.pop()


def cmd_lsp(args: argparse.Namespace) -> int:
    from lsp_server.server import run
    from lsp_server.tcp import TcpRefusal

    if args.allow_remote and not args.tcp:
        raise UsageError("--allow-remote goes with --tcp HOST:PORT.")
    try:
        return run(tcp=args.tcp, allow_remote=args.allow_remote)
    except TcpRefusal as exc:
        raise UsageError(str(exc)) from None


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


def cmd_feedback(args: argparse.Namespace) -> int:
    """See or delete the editor's feedback log (``model.runtime.feedback_log``); torch-free."""
    from model.runtime import feedback_log

    if args.workspace is not None:
        folder = Path(args.workspace).expanduser()
        if not folder.is_dir():
            raise UsageError(f"--workspace {args.workspace} is not a folder.")
        paths = [feedback_log.log_path(folder)]
    else:
        paths = feedback_log.log_files()
    if args.action == "path":
        sys.stdout.write(f"{paths[0] if args.workspace is not None else feedback_log.feedback_dir()}\n")
        return 0
    existing = [p for p in paths if p.is_file()]
    where = f"for {args.workspace} " if args.workspace is not None else ""
    if args.action == "clear":
        return _clear_feedback(existing, where, args.yes)
    logs: list[dict[str, Any]] = []
    for path in existing:
        rows = feedback_log.read_rows(path)
        logs.append({"path": str(path), "workspace": feedback_log.workspace_of(rows), "rows": rows.counts(),
                     "bad_lines": len(rows.bad), "bytes": path.stat().st_size})
    if args.json:
        sys.stdout.write(json.dumps({"folder": str(feedback_log.feedback_dir()), "logs": logs}) + "\n")
        return 0
    if not logs:
        sys.stdout.write(f"No feedback log {where}in {feedback_log.feedback_dir()} (the editor writes one only "
                         "while the setting starchat.feedback.enabled is on).\n")
    for entry in logs:
        counts = ", ".join(f"{kind} {n}" for kind, n in entry["rows"].items())
        bad = f"; {entry['bad_lines']} bad line(s) skipped" if entry["bad_lines"] else ""
        sys.stdout.write(f"{entry['path']}\n  workspace: {entry['workspace'] or '(no whole rows)'}\n"
                         f"  rows: {counts}{bad}\n  size: {_size(entry['bytes'])}\n")
    return 0


def _clear_feedback(existing: list[Path], where: str, yes: bool) -> int:
    from model.runtime.feedback_log import delete_logs

    if not existing:
        sys.stdout.write(f"No feedback log {where}to delete.\n")
        return 0
    if not yes and sys.stdin.isatty():  # a person at a terminal is asked; scripts are not
        answer = input(f"Delete {len(existing)} feedback log(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            sys.stdout.write("Nothing was deleted.\n")
            return 0
    for path, size in delete_logs(existing):
        sys.stdout.write(f"Deleted {path} ({_size(size)}).\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starchat", description="A coding assistant on your own model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lsp", help="run the language server on stdio")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (loopback only by default)")
    p.add_argument("--allow-remote", action="store_true",
                   help="with --tcp: allow a non-loopback address; clients must then send the token "
                        "printed at first start (docs/lsp.md, TCP)")
    p.set_defaults(func=cmd_lsp)

    p = sub.add_parser("ask", help="ask one question; the answer streams to stdout")
    p.add_argument("question")
    p.add_argument("--file", help="a source file to give as context")
    p.add_argument("--lines", metavar="A-B", help="the selection inside --file (1-based, inclusive)")
    p.add_argument("--stats", action="store_true", help="print one JSON line of timing stats on stderr")
    _add_generation_args(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="multi-turn chat in the terminal")
    _add_generation_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("feedback", help="see or delete the editor's feedback log (starchat.feedback.enabled)")
    p.add_argument("action", nargs="?", choices=("show", "path", "clear"), default="show",
                   help="show: each log's rows by kind and size (default); path: where the logs are; "
                        "clear: delete them")
    p.add_argument("--workspace", metavar="DIR", help="only the log of this workspace folder")
    p.add_argument("--json", action="store_true", help="show: one JSON object")
    p.add_argument("--yes", action="store_true", help="clear: do not ask (it never asks when not at a terminal)")
    p.set_defaults(func=cmd_feedback)

    for name, text in (
        ("worker", "run the shared model worker (normally started on demand)"),
        ("train", "fine-tune a model: starchat train CONFIG.yaml [--key value ...]"),
        ("eval", "evaluate: generate, judge, humaneval, plots, lm-eval, repo"),
        ("adapt", "adapt a model to a repository's code: starchat adapt REPO --out DIR"),
        ("export-gguf", "convert a trained model folder to a GGUF file: starchat export-gguf FOLDER OUT.gguf "
                        "(a LoRA adapter folder: add --base BASE.gguf)"),
    ):
        sub.add_parser(name, help=text, add_help=False)  # listed in --help; main() forwards them
    return parser


FORWARDED = {"worker": "model.serving.worker", "train": "training.train", "eval": "training.evaluate",
             "export-gguf": "training.export.cli", "adapt": "training.adapt"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in FORWARDED:  # their own parsers handle everything, --help included
        import importlib

        try:
            return int(importlib.import_module(FORWARDED[argv[0]]).main(argv[1:]) or 0)
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    from model.serving.client import WorkerError

    try:
        return args.func(args)
    except UsageError as exc:
        _err(f"starchat {args.command}: {exc}")
        return EXIT_USAGE
    except WorkerError as exc:
        _err(f"starchat {args.command}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
