"""In-process tests of settings parsing: bad values become warnings and defaults."""

from __future__ import annotations

import pytest

from lsp_server.config import Settings, generation_params, parse_settings, section_of


def test_defaults_when_nothing_is_sent():
    settings, problems = parse_settings(None)
    assert settings == Settings() and problems == []
    assert generation_params(settings) == {
        "max_new_tokens": 512, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
        "repetition_penalty": 1.0, "adapter_scale": 1.0,
    }


def test_valid_values_are_taken():
    settings, problems = parse_settings(
        {"model": {"name": "/models/x"}, "generation": {"max_new_tokens": 64, "temperature": 1,
         "seed": 3}, "context": {"surrounding_lines": 5}, "worker": {"autostart": False}}
    )
    assert problems == []
    assert settings.model == "/models/x"
    assert settings.generation.max_new_tokens == 64
    assert settings.generation.temperature == 1.0 and settings.generation.seed == 3
    assert settings.context.surrounding_lines == 5 and settings.worker.autostart is False


def test_bad_values_give_sentences_and_defaults():
    settings, problems = parse_settings(
        {"model": 7, "generation": {"max_new_tokens": "many", "top_p": 3}, "context": [],
         "colour": "red"}
    )
    assert settings == Settings()
    text = " ".join(problems)
    assert "starchat.model" in text and "starchat.generation.max_new_tokens" in text
    assert "top_p" in text and "starchat.context must be an object" in text
    assert "Unknown setting starchat.colour" in text


def test_section_is_found_with_or_without_the_wrapper():
    assert section_of({"starchat": {"model": "a"}}) == {"model": "a"}
    assert section_of({"model": "a"}) == {"model": "a"}


def test_a_value_the_worker_would_refuse_is_one_warning_and_its_default():
    """The server checks generation settings with the worker's own rules (model.prompt.params)."""
    from model.prompt.params import GenerationParams

    for field, value in [("temperature", 50), ("repetition_penalty", 0), ("max_new_tokens", 2**64),
                         ("max_new_tokens", 200_000), ("temperature", float("nan")),
                         ("stop", "###"), ("seed", -1)]:
        settings, problems = parse_settings(
            {"generation": {field: value, "top_k": 40, "max_new_tokens": 64}
             if field != "max_new_tokens" else {field: value, "top_k": 40}}
        )
        with pytest.raises(ValueError) as worker_says:
            GenerationParams.from_dict({field: value})
        assert len(problems) == 1, problems
        assert f"starchat.generation.{field}" in problems[0]
        assert str(worker_says.value) in problems[0]  # the same sentence as the worker's
        assert getattr(settings.generation, field) == getattr(GenerationParams(), field)
        assert settings.generation.top_k == 40  # the valid fields beside it are kept
        # What is sent to the worker is accepted by it.
        assert GenerationParams.from_dict(generation_params(settings)) == settings.generation


def test_stop_strings_are_a_setting_and_reach_the_request():
    settings, problems = parse_settings({"generation": {"stop": ["###"], "seed": 5}})
    assert problems == []
    assert generation_params(settings)["stop"] == ["###"] and generation_params(settings)["seed"] == 5
    settings, problems = parse_settings({"generation": {"beams": 4}})
    assert problems == ["Unknown setting starchat.generation.beams is ignored."]


def test_the_feedback_log_is_off_unless_turned_on():
    assert Settings().feedback.enabled is False
    settings, problems = parse_settings({"feedback": {"enabled": True, "maxMegabytes": 5}})
    assert problems == [] and settings.feedback.enabled is True and settings.feedback.max_megabytes == 5
    settings, problems = parse_settings({"feedback": {"enabled": "yes", "maxMegabytes": 0, "upload": True}})
    assert settings.feedback == Settings().feedback
    assert problems == [
        "Setting starchat.feedback.enabled must be true or false; using the default False.",
        "Setting starchat.feedback.maxMegabytes must be an integer from 1 to 4096; using the default 20.",
        "Unknown setting starchat.feedback.upload is ignored.",
    ]
