"""Smoke test: the classifier accuracy benchmark runs end to end in --quick mode."""

from __future__ import annotations

import json
from pathlib import Path

from bench.classifier_accuracy import SETS, main
from tasks.config import load_spec, taxonomies_for


def test_classifier_accuracy_quick(tmp_path: Path) -> None:
    output = tmp_path / "classifier_accuracy.json"
    measurements = tmp_path / "classifier_accuracy_measured.json"
    report = main(["--quick", "--output", str(output), "--measurements", str(measurements)])
    assert json.loads(output.read_text()) == report
    assert not measurements.exists()  # 10 prompts per set are no measurement for a card
    assert [row["set"] for row in report["results"]] == list(SETS)
    for row in report["results"]:
        assert row["classifier"] == "minilm-embedding" and row["n"] == 10
        for key in ("top1_accuracy", "macro_f1", "unknown_rate@0.5", "unknown_rate@0.3"):
            assert isinstance(row[key], float) and 0.0 <= row[key] <= 1.0, key
        assert row["prompts_per_second"] > 0


def test_labelled_sets_use_taxonomy_names() -> None:
    for spec_name, dimension, path in SETS.values():
        allowed = set(taxonomies_for(load_spec(spec_name))[dimension].allowed_labels)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert {row["label"] for row in rows} == allowed  # every label, nothing else
        assert len({row["text"] for row in rows}) == len(rows)


def test_labelled_sets_hold_no_taxonomy_example_and_dev_and_test_are_apart() -> None:
    """Taxonomy examples build the embedding prototypes: a labelled prompt that is one of them
    would be scored against itself."""
    texts = {}
    for name, (spec_name, dimension, path) in SETS.items():
        taxonomy = taxonomies_for(load_spec(spec_name))[dimension]
        examples = {text.casefold() for label_texts in taxonomy.label_texts().values() for text in label_texts}
        texts[name] = {json.loads(line)["text"].casefold() for line in path.read_text(encoding="utf-8").splitlines()}
        assert not texts[name] & examples, name
    assert not texts["culturax-dev"] & texts["culturax-test"]
