"""Templates render data as data: hostile prompt text is never evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.config import PROMPTS_DIR
from tasks.prompts import PromptLibrary, load_template

HOSTILE = [
    "{{ 7 * 7 }}",
    "{% for x in range(3) %}loop{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ config }} {{ self }} {{ lipsum.__globals__ }}",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_prompt_text_stays_literal(text: str) -> None:
    template = PromptLibrary(PROMPTS_DIR).get("classify")
    messages = template.render(text=text, dimension="cultural", taxonomy_title="t", domains=[], none_label=None)
    assert messages[-1].content == text


def test_every_template_loads_and_has_a_hash() -> None:
    library = PromptLibrary(PROMPTS_DIR)
    names = sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))
    assert {"classify", "expand"} <= set(names)
    hashes = {name: library.get(name).sha256 for name in names}
    assert all(len(h) == 64 for h in hashes.values())
    assert library.used == hashes


def test_a_changed_template_changes_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "step.yaml"
    path.write_text("user: 'Say {{ text }}'\n")
    first = load_template(path).sha256
    path.write_text("user: 'Say {{ text }}!'\n")
    assert load_template(path).sha256 != first


def test_missing_variables_fail_loudly(tmp_path: Path) -> None:
    path = tmp_path / "step.yaml"
    path.write_text("user: 'Say {{ text }}'\n")
    with pytest.raises(Exception, match="text"):
        load_template(path).render()


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "step.yaml"
    path.write_text("user: hi\nassistant: hello\n")
    with pytest.raises(ValueError, match="unknown fields"):
        load_template(path)
