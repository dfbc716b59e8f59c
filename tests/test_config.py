"""Specs, profiles and taxonomies validate; bad files get errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config import ConfigError, apply_profile, load_profile, load_spec, load_taxonomy, spec_names, taxonomies_for


def test_the_four_specs_validate_with_their_taxonomies() -> None:
    assert spec_names() == ["culturax", "demo_safetybench", "misaligntrade", "savacu"]
    for name in spec_names():
        spec = load_spec(name)
        assert spec.name == name
        taxonomies_for(spec)


def test_paper_parameters_are_in_the_specs() -> None:
    for name in spec_names():
        spec = load_spec(name)
        assert spec.classification.threshold == 0.5
        assert spec.dedup.tau == 10 and spec.dedup.bits == 64
        assert spec.expansion.sampling.temperature == 0.7 and spec.expansion.sampling.max_tokens == 64
        assert spec.expansion.target_per_domain == 100
    culturax = load_spec("culturax")
    assert culturax.responses.candidates == 3 and culturax.responses.feedback_iterations == 2
    assert culturax.responses.sampling.max_tokens == 512
    assert load_spec("misaligntrade").models.classifier == "google/gemma-2-9b-it"
    assert len(load_spec("misaligntrade").models.generators) == 2
    assert load_spec("demo_safetybench").models.raters == ("google/gemma-7b-it", "gpt-4o", "meta-llama/Llama-2-7b-chat-hf")


def test_profiles_validate_and_map_every_role() -> None:
    for name in ("local", "paper"):
        profile = load_profile(name)
        for spec_name in spec_names():
            models = load_spec(spec_name).models
            for model in (models.classifier, models.expander, *models.generators, *models.raters):
                assert profile.engine_for(model).backend
    assert load_profile("paper").engine_for("gpt-4o").backend == "openai"
    assert load_profile("paper").engine_for("google/gemma-2-9b-it").backend == "vllm"


def test_local_profile_scales_the_spec_down() -> None:
    spec = apply_profile(load_spec("culturax"), load_profile("local"))
    assert load_spec("culturax").responses.require_pass  # the papers' rule
    assert spec.expansion.target_per_domain == 1
    assert spec.classification.threshold == 0.3 and spec.responses.judge_mode == "choice"
    assert spec.responses.candidates == 1
    assert not spec.responses.require_pass  # the demo keeps prompts without a passing response, flagged
    assert spec.expansion.sampling.max_tokens == 64  # sampling of Stage I unchanged


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(load_spec.__code__.co_filename).parent.parent.joinpath("data/specs/culturax.yaml").read_text()
                   .replace("tau: 10", "tau: 99"))
    with pytest.raises(ConfigError, match=r"dedup\.tau"):
        load_spec(str(bad))


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(bad))


@pytest.mark.parametrize("name", ["../etc/passwd", "culturax/../../x", "UPPER", ""])
def test_names_cannot_traverse_paths(name: str) -> None:
    with pytest.raises(ConfigError, match="not a plain name"):
        load_spec(name)
    with pytest.raises(ConfigError, match="not a plain name"):
        load_taxonomy(name)
