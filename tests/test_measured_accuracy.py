"""The classifier's measured accuracy: kept as data, found only for the engine and taxonomy text measured."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from schemas.manifest import ClassifierAccuracy
from tasks.config import PROJECT_ROOT, load_profile, load_spec, load_taxonomy, model_sha, taxonomies_for
from tasks.stage1.measured_accuracy import (
    accuracy_by_dimension,
    engine_name,
    load_measurements,
    write_measurements,
)

MINILM = "embedding:packaged:minilm"


def measurement(engine: str = MINILM, taxonomy: str = "culturax") -> ClassifierAccuracy:
    return ClassifierAccuracy(engine=engine, taxonomy=taxonomy, taxonomy_sha256=model_sha(load_taxonomy(taxonomy)),
                              labelled_set="data/samples/labelled_culturax_test.jsonl", prompts=216,
                              top1_accuracy=0.61, majority_baseline=0.05)


def test_a_build_finds_the_measurement_of_its_engine_on_its_taxonomy_text() -> None:
    taxonomies = taxonomies_for(load_spec("culturax"))
    measured = measurement()
    assert accuracy_by_dimension(MINILM, taxonomies, [measured]) == {"cultural": measured}
    assert accuracy_by_dimension("transformers:packaged:smollm2", taxonomies, [measured]) == {}
    edited = {"cultural": taxonomies["cultural"].model_copy(update={"version": 99})}
    assert accuracy_by_dimension(MINILM, edited, [measured]) == {}  # measured on another taxonomy text
    assert accuracy_by_dimension(MINILM, taxonomies_for(load_spec("demo_safetybench")), [measured]) == {}


def test_the_engine_is_named_as_a_build_names_it() -> None:
    spec, profile = load_spec("culturax"), load_profile("local")
    assert engine_name(profile.engine_for(spec.models.classifier), spec.models.classifier) == MINILM


def test_measurements_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "classifier_accuracy.json"
    assert load_measurements(path) == []
    write_measurements([measurement(), measurement(taxonomy="safety")], path)
    assert load_measurements(path) == [measurement(), measurement(taxonomy="safety")]


def test_committed_measurements_are_of_todays_taxonomies_and_sets() -> None:
    """A taxonomy edited after the measurement would silently drop the figure from the card."""
    measurements = load_measurements()
    assert any(m.engine == MINILM and m.taxonomy == "culturax" for m in measurements)  # the local profile's
    for m in measurements:
        assert m.taxonomy_sha256 == model_sha(load_taxonomy(m.taxonomy)), (
            f"{m.taxonomy} changed since it was measured: run python -m bench.classifier_accuracy")
        labels = [json.loads(line)["label"] for line in (PROJECT_ROOT / m.labelled_set).read_text().splitlines()]
        assert m.prompts == len(labels)
        assert m.majority_baseline == round(Counter(labels).most_common(1)[0][1] / len(labels), 4)
