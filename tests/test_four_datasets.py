"""All four specs build end to end on their bundled samples (scripted engines, so in
seconds), and each version loads with `datasets` with the expected columns and with
per-domain counts that match its manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml

from flows.build import run_build
from tasks.config import spec_names

CLASSIFIER = {"festival": "Festivals", "dance": "Dance", "food": "Culinary Arts", "language": "Language",
              "scam": "Financial Crime, Property Crime, Theft", "drink": "Drug Abuse, Weapons, Banned Substance",
              "rich": "Wealth", "creative": "Creativity", "Thailand": "Language", "": "None"}
WRITER = {"Criteria:": "9", "Domain:": "How do people in my town keep their old festival customs alive?",
          "unsafe": "No", "": "A careful answer that explains the matter plainly and respects everyone involved."}

EXPECTED_COLUMNS = {
    "culturax": {"question", "class", "domain", "helpful_response", "harmless_response", "honest_response",
                 "simhash", "pass_hhh", "prompt_id", "split"},
    "savacu": {"prompt_id", "safety_label", "value_label", "cultural_label", "generator_model", "aligned_response",
               "misaligned_response", "simhash", "split"},
    "misaligntrade": {"prompt_id", "safety_label", "value_label", "cultural_label", "semantic_type_label",
                      "generator_model", "aligned_response", "misaligned_response", "split"},
    "demo_safetybench": {"prompt_id", "safety_label", "rater_gender", "rater_race", "rater_age", "rater_education",
                         "Q_overall", "split"},
}
LABEL_COLUMN = {"culturax": ("cultural", "domain")}


@pytest.fixture(scope="module")
def scripted_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("four") / "scripted.yaml"
    profile = {"name": "scripted", "description": "scripted engines", "source": "sample",
               "default_engine": {"backend": "scripted", "scripted_answers": WRITER},
               "models": {model: {"backend": "scripted", "scripted_answers": CLASSIFIER}
                          for model in ("mistralai/Mistral-7B-Instruct-v0.3", "google/gemma-2-9b-it")},
               "expansion_target": 2, "max_expansion_rounds": 1, "candidates_per_target": 1,
               "feedback_iterations": 1, "classification_threshold": 0.5, "limit": 40, "shard_size": 8}
    path.write_text(yaml.safe_dump(profile, sort_keys=False))  # answer order matters
    return path


@pytest.mark.parametrize("name", spec_names())
def test_each_dataset_builds_and_loads_with_its_manifest_counts(name: str, scripted_profile: Path, tmp_path) -> None:
    result = run_build(name, str(scripted_profile), home=str(tmp_path))
    folder = Path(result["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    loaded = datasets.load_dataset("parquet", data_dir=str(folder / "data" / "default"))
    rows = [row for split in loaded.values() for row in split]
    assert rows, f"{name}: nothing published"
    assert EXPECTED_COLUMNS[name] <= set(next(iter(loaded.values())).column_names)
    assert sum(manifest["splits"]["default"].values()) == len(rows)

    dimension, column = LABEL_COLUMN.get(name, (manifest["spec"]["expansion"]["dimension"], None))
    column = column or f"{dimension}_label"
    labels_per_prompt = {row["prompt_id"]: row[column] for row in rows}
    assert Counter(labels_per_prompt.values()) == Counter(manifest["domain_counts"][dimension]["published"])
    for stage in manifest["stages"]:
        assert stage["rows_in"] + stage["added"] == stage["kept"] + stage["rejected"], (name, stage)
