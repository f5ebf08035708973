"""Typed settings of the section ``starchat``, with a default for every field.

Settings come from ``initializationOptions`` and ``workspace/didChangeConfiguration``.
Bad values never raise: :func:`parse_settings` returns the defaults for the bad parts and
one sentence per problem, which the server shows to the user as a warning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model.prompt.params import FIELD_NAMES, GenerationParams
from model.runtime.feedback_log import DEFAULT_MAX_MEGABYTES  # standard library only

SECTION = "starchat"


@dataclass(frozen=True)
class ContextSettings:
    """How much editor context goes into a prompt."""

    surrounding_lines: int = 20
    # Fix/Add docstring: surrounding code made the embedded 135M model rewrite a
    # neighbouring function instead of the selection, so edits send none by default.
    edit_surrounding_lines: int = 0
    max_diagnostics: int = 20


@dataclass(frozen=True)
class WorkerSettings:
    """Where the model worker lives."""

    socket_path: str | None = None
    autostart: bool = True


#: ``commands.answer``: when a generating command answers (see features/early_answer.py).
ANSWER_MODES = ("auto", "wait", "early")


@dataclass(frozen=True)
class CommandSettings:
    """How generating commands answer ``workspace/executeCommand``."""

    answer: str = "auto"


@dataclass(frozen=True)
class CompletionSettings:
    """Inline completion (``starchat.completion``; camelCase keys, like the LSP)."""

    enabled: bool = True
    max_new_tokens: int = 64
    context_tokens: int = 1024
    model: str | None = None  # a separate (usually smaller FIM) model spec; None: the chat model
    template: str = "auto"  # a FIM family of model.prompt.fim.TEMPLATES, or auto-detect
    invoked_items: int = 3  # suggestions for an explicit request (triggerKind Invoked)
    # How much of the model spec's LoRA adapter (``BASE+DIR``) completions use: 1 as trained,
    # 0 the base alone (chat has its own: ``generation.adapter_scale``); None: the completion
    # scale the adapter carries (``starchat adapt`` writes it), else 1. No adapter: ignored.
    adapter_scale: float | None = None


@dataclass(frozen=True)
class FeedbackSettings:
    """The feedback log (``starchat.feedback``): off unless the user turns it on; local only."""

    enabled: bool = False
    max_megabytes: int = DEFAULT_MAX_MEGABYTES  # a workspace's log stops growing at this size


@dataclass(frozen=True)
class Settings:
    """All settings of the section ``starchat``."""

    model: str = "default"
    #: Set for a model behind an OpenAI-compatible server: the ``model`` object's items
    #: (backend, url, model, api_key_env, timeouts) as ``model.backends.openai_backend`` reads them.
    backend: tuple[tuple[str, Any], ...] = ()
    #: The worker's own type and rules (``model.prompt.params``), checked here so that a value the
    #: worker would refuse is one warning now, not a failure of every chat later.
    generation: GenerationParams = field(default_factory=GenerationParams)
    context: ContextSettings = field(default_factory=ContextSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)


def _check_value(name: str, value: Any, default: Any) -> str | None:
    """Return a sentence when ``value`` does not fit the type of ``default``."""
    if name == "answer":
        return None if value in ANSWER_MODES else 'must be "auto", "wait" or "early"'
    if name == "socket_path":
        return None if value is None or isinstance(value, str) else "must be a string or null"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "must be a non-negative integer"
        return None
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            return "must be a non-negative number"
        return None
    return None


def _parse_group(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    default = cls()
    if raw is None:
        return default
    if not isinstance(raw, dict):
        problems.append(f"Setting {path} must be an object; using the defaults.")
        return default
    values = {}
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in known:
            problems.append(f"Unknown setting {path}.{key} is ignored.")
            continue
        why = _check_value(key, value, getattr(default, key))
        if why:
            problems.append(
                f"Setting {path}.{key} {why}; using the default {getattr(default, key)!r}."
            )
            continue
        values[key] = float(value) if isinstance(getattr(default, key), float) else value
    return dataclasses.replace(default, **values)


def _parse_generation(raw: Any, problems: list[str]) -> GenerationParams:
    path = f"{SECTION}.generation"
    if raw is not None and not isinstance(raw, dict):
        problems.append(f"Setting {path} must be an object; using the defaults.")
        return GenerationParams()
    params, bad = GenerationParams.parse(raw)
    for key, sentence in bad.items():
        if key in FIELD_NAMES:
            default = getattr(GenerationParams(), key)
            problems.append(f"Setting {path}.{key} is invalid: {sentence} Using the default {default!r}.")
        else:
            problems.append(f"Unknown setting {path}.{key[:40]} is ignored.")
    return params


OPENAI_KEYS = ("backend", "url", "model", "api_key_env", "connect_timeout", "read_timeout",
               "max_prompt_chars")


def _parse_model(raw: Any, problems: list[str]) -> tuple[str, tuple]:
    # A string spec, an object {"name": spec}, or {"backend": "openai", "url": ...}.
    if raw is None:
        return "default", ()
    if isinstance(raw, dict) and raw.get("backend", "worker") != "worker":
        return _parse_openai(raw, problems)
    if isinstance(raw, dict):
        raw = raw.get("name")
    if isinstance(raw, str) and raw.strip():
        return raw.strip(), ()
    problems.append(
        f"Setting {SECTION}.model must be a non-empty string or an object with a "
        "\"name\"; using \"default\"."
    )
    return "default", ()


def _parse_openai(raw: dict, problems: list[str]) -> tuple[str, tuple]:
    # Imported only by users of this backend: start-up stays free of the model layer.
    from model.backends.openai_backend import parse_backend  # noqa: PLC0415

    for key in raw:
        if key not in OPENAI_KEYS:
            problems.append(f"Unknown setting {SECTION}.model.{key} is ignored.")
    try:
        parsed = parse_backend({k: v for k, v in raw.items() if k in OPENAI_KEYS})
    except ValueError as exc:
        problems.append(f"Setting {SECTION}.model is invalid: {exc} Using \"default\".")
        return "default", ()
    return parsed.get("model") or parsed["url"], tuple(sorted(parsed.items()))


def section_of(options: Any) -> Any:
    """Return the ``starchat`` section of a settings object (or the object itself)."""
    if isinstance(options, dict) and SECTION in options:
        return options[SECTION]
    return options


def parse_settings(raw: Any) -> tuple[Settings, list[str]]:
    """Parse the ``starchat`` section into :class:`Settings` plus a list of problems."""
    problems: list[str] = []
    if raw is None:
        return Settings(), problems
    if not isinstance(raw, dict):
        problems.append(f"Settings section {SECTION} must be an object; using the defaults.")
        return Settings(), problems
    for key in raw:
        if key not in ("model", "generation", "context", "worker", "completion", "commands", "feedback"):
            problems.append(f"Unknown setting {SECTION}.{key} is ignored.")
    model, backend = _parse_model(raw.get("model"), problems)
    settings = Settings(
        model=model,
        backend=backend,
        generation=_parse_generation(raw.get("generation"), problems),
        context=_parse_group(ContextSettings, raw.get("context"), f"{SECTION}.context", problems),
        worker=_parse_group(WorkerSettings, raw.get("worker"), f"{SECTION}.worker", problems),
        completion=parse_completion(raw.get("completion"), problems),
        commands=_parse_group(
            CommandSettings, raw.get("commands"), f"{SECTION}.commands", problems
        ),
        feedback=_parse_checked(FeedbackSettings, _FEEDBACK_CHECKS, raw.get("feedback"), "feedback", problems),
    )
    return settings, problems


# The FIM families of model.prompt.fim.TEMPLATES (not imported: start-up stays free of the model layer).
FIM_TEMPLATES = ("auto", "qwen", "starcoder", "deepseek", "codellama", "none")
_COMPLETION_CHECKS: dict[str, tuple[str, Any, str]] = {
    # key: (field, check, what a good value is)
    "enabled": ("enabled", lambda v: isinstance(v, bool), "must be true or false"),
    "maxNewTokens": ("max_new_tokens", lambda v: _int_in(v, 1, 1024), "must be an integer from 1 to 1024"),
    "contextTokens": ("context_tokens", lambda v: _int_in(v, 32, 32768), "must be an integer from 32 to 32768"),
    "model": ("model", lambda v: v is None or (isinstance(v, str) and bool(v.strip())), "must be a model spec (a non-empty string) or null"),
    "template": ("template", lambda v: v in FIM_TEMPLATES, "must be one of " + ", ".join(FIM_TEMPLATES)),
    "invokedItems": ("invoked_items", lambda v: _int_in(v, 1, 8), "must be an integer from 1 to 8"),
    "adapterScale": ("adapter_scale", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                     and 0 <= v <= 4), "must be a number from 0 (the base model alone) to 4, or null (as the adapter says)"),
}


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


_FEEDBACK_CHECKS: dict[str, tuple[str, Any, str]] = {
    "enabled": ("enabled", lambda v: isinstance(v, bool), "must be true or false"),
    "maxMegabytes": ("max_megabytes", lambda v: _int_in(v, 1, 4096), "must be an integer from 1 to 4096"),
}


def parse_completion(raw: Any, problems: list[str]) -> CompletionSettings:
    """``starchat.completion``: each bad value -> one sentence in ``problems`` and its default."""
    return _parse_checked(CompletionSettings, _COMPLETION_CHECKS, raw, "completion", problems)


def _parse_checked(cls: type, checks: dict[str, tuple[str, Any, str]], raw: Any, name: str,
                   problems: list[str]) -> Any:
    """A group with camelCase keys (``checks``: key -> field, check, what a good value is)."""
    default = cls()
    path = f"{SECTION}.{name}"
    if raw is None:
        return default
    if not isinstance(raw, dict):
        problems.append(f"Setting {path} must be an object; using the defaults.")
        return default
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in checks:
            problems.append(f"Unknown setting {path}.{key} is ignored.")
            continue
        field_name, ok, why = checks[key]
        if not ok(value):
            problems.append(f"Setting {path}.{key} {why}; using the default {getattr(default, field_name)!r}.")
            continue
        values[field_name] = value.strip() if isinstance(value, str) else value
    return dataclasses.replace(default, **values)


def model_backend(settings: Settings) -> dict[str, Any]:
    """The setting ``model.backends.openai_backend.make_async_client`` takes: worker or OpenAI server."""
    if settings.backend:
        return dict(settings.backend)
    return {"backend": "worker", "name": settings.model,
            "socket_path": settings.worker.socket_path, "autostart": settings.worker.autostart}


def generation_params(settings: Settings) -> dict[str, Any]:
    """The ``params`` dict of a worker request (unset seed and stop left out)."""
    params = settings.generation.to_dict()
    if params["seed"] is None:
        del params["seed"]
    if not params["stop"]:
        del params["stop"]
    return params
