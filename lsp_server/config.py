"""Typed settings of the section ``starchat``, with a default for every field.

Settings come from ``initializationOptions`` and ``workspace/didChangeConfiguration``.
Bad values never raise: :func:`parse_settings` returns the defaults for the bad parts and
one sentence per problem, which the server shows to the user as a warning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SECTION = "starchat"


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling parameters sent to the worker (``model.engine.GenerationParams`` fields)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None


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
class Settings:
    """All settings of the section ``starchat``."""

    model: str = "default"
    #: Set for a model behind an OpenAI-compatible server: the ``model`` object's items
    #: (backend, url, model, api_key_env, timeouts) as ``model.openai_backend`` reads them.
    backend: tuple[tuple[str, Any], ...] = ()
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)


def _check_value(name: str, value: Any, default: Any) -> str | None:
    """Return a sentence when ``value`` does not fit the type of ``default``."""
    if name == "seed":
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        return None if ok else "must be an integer or null"
    if name == "answer":
        return None if value in ANSWER_MODES else 'must be "auto", "wait" or "early"'
    if name == "socket_path":
        return None if value is None or isinstance(value, str) else "must be a string or null"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "must be a non-negative integer"
        if name == "max_new_tokens" and value < 1:
            return "must be at least 1"
        return None
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            return "must be a non-negative number"
        if name == "top_p" and not 0 < value <= 1:
            return "must be in (0, 1]"
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
    from model.openai_backend import parse_backend  # noqa: PLC0415

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
        if key not in ("model", "generation", "context", "worker", "commands"):
            problems.append(f"Unknown setting {SECTION}.{key} is ignored.")
    model, backend = _parse_model(raw.get("model"), problems)
    settings = Settings(
        model=model,
        backend=backend,
        generation=_parse_group(
            GenerationSettings, raw.get("generation"), f"{SECTION}.generation", problems
        ),
        context=_parse_group(ContextSettings, raw.get("context"), f"{SECTION}.context", problems),
        worker=_parse_group(WorkerSettings, raw.get("worker"), f"{SECTION}.worker", problems),
        commands=_parse_group(
            CommandSettings, raw.get("commands"), f"{SECTION}.commands", problems
        ),
    )
    return settings, problems


def model_backend(settings: Settings) -> dict[str, Any]:
    """The setting ``model.openai_backend.make_async_client`` takes: worker or OpenAI server."""
    if settings.backend:
        return dict(settings.backend)
    return {"backend": "worker", "name": settings.model,
            "socket_path": settings.worker.socket_path, "autostart": settings.worker.autostart}


def generation_params(settings: Settings) -> dict[str, Any]:
    """The ``params`` dict of a worker request."""
    params = dataclasses.asdict(settings.generation)
    if params["seed"] is None:
        del params["seed"]
    return params
