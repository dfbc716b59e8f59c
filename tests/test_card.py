"""The dataset card: metadata that huggingface_hub and datasets accept, and a body that reports the build."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import datasets
import pyarrow as pa
import pytest
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from schemas.manifest import ClassifierAccuracy, ExpansionOutcome, Manifest, ModelUse, SourceFingerprint, StageReport
from schemas.records import REJECT_SCHEMA, prompt_schema
from schemas.spec import DatasetSpec, DimensionSpec, ExpansionSpec, RealSource, ResponseSpec, RoleModels, SourceSpec
from schemas.taxonomy import Domain, SpecialLabel, Taxonomy
from tasks.kinds import stage_two_kind
from tasks.release.card import render_card, size_category
from tasks.config import load_spec, spec_names, taxonomies_for
from tasks.release.store import DatasetStore

KEY = "c0ffee1234" + "0" * 54
SIZE_CATEGORIES = Path(datasets.__file__).parent / "utils" / "resources" / "size_categories.json"

SPEC = DatasetSpec(
    name="demo_bench",
    title="Demo: Bench | safety",  # a colon and a pipe, to exercise YAML and table escaping
    description="Prompts labelled with safety domains, with aligned and misaligned responses.",
    paper="Doe et al., *Demo Bench* (2026). https://example.org/paper",
    license="cc-by-4.0",
    source=SourceSpec(
        name="demo_prompts", real=RealSource(hub_id="someone/demo-prompts", license="mit"),
        sample="data/samples/demo.jsonl", format="jsonl", text_column="prompt",
    ),
    dimensions=(DimensionSpec(name="safety", taxonomy="safety_demo"),),
    models=RoleModels(classifier="mistralai/Mistral-7B-Instruct-v0.3", expander="meta-llama/Llama-3.1-8B-Instruct",
                      generators=("meta-llama/Llama-3.1-8B-Instruct",), judge="meta-llama/Llama-3.1-8B-Instruct"),
    expansion=ExpansionSpec(dimension="safety"),
    responses=ResponseSpec(mode="aligned_misaligned", targets=("aligned", "misaligned")),
    paper_size=382_424,
)
TAXONOMY = Taxonomy(
    name="safety_demo", title="Safety domains", dimension="safety", source="BeaverTails", version=1,
    domains=(
        Domain(id=0, name="Violence", description="Physical harm, threats and weapons.", paper_count=120),
        Domain(id=1, name="Fraud", description="Scams, deception for gain and forgery."),
    ),
    none=SpecialLabel(id=14, name="None", description="No safety domain applies."),
)
SCHEMA = prompt_schema(["safety"])


def make_manifest(source_kind: str = "sample") -> Manifest:
    return Manifest(
        dataset="demo_bench", version="pending", content_key=KEY, created_at="2026-11-23T10:15:00Z",
        alignforge_version="0.1.0", profile="local", spec=SPEC.model_dump(mode="json"),
        code_sha256="12" * 32, git_commit="0123abc",
        source=(SourceFingerprint(kind="sample", location="data/samples/demo.jsonl", sha256="ab" * 32, rows=5)
                if source_kind == "sample" else
                SourceFingerprint(kind="hub", location="someone/demo-prompts:default:train", sha256="ab" * 32, rows=5,
                                  revision="9f8e7d")),
        taxonomies={"safety": "cd" * 32}, templates={"classify": "ef" * 32},
        models=[ModelUse(role="classifier", spec_model="mistralai/Mistral-7B-Instruct-v0.3",
                         engine="transformers:SmolLM2-135M-Instruct@main", requests=5, cache_hits=2)],
        seed=42,
        stages=[
            StageReport(stage="ingest", rows_in=5, kept=5, rejected=0),
            StageReport(stage="dedup", rows_in=5, kept=4, rejected=1, rejected_by_reason={"near_duplicate": 1},
                        stats={"clusters": 1.0}),
        ],
        expansion=[
            ExpansionOutcome(domain="Violence", target=100, before=10, reached=100, rounds=2, generated=140,
                             accepted=90, met=True),
            ExpansionOutcome(domain="Fraud", target=100, before=3, reached=80, rounds=3, generated=150,
                             accepted=77, met=False),
        ],
        domain_counts={"safety": {"before": {"Violence": 10, "Fraud": 3, "None": 1},
                                  "after": {"Violence": 100, "Fraud": 80, "None": 1}}},
        leakage={"test_share_near_train": 0.003},
        open_choices={"simhash shingling": "word bigrams, idf-weighted"},
    )


def prompts(ids: list[str]) -> pa.Table:
    columns = {name: [None] * len(ids) for name in SCHEMA.names}
    columns.update(prompt_id=ids, text=[f"text {i}" for i in ids], origin=["source"] * len(ids),
                   safety_label=["Violence"] * len(ids))
    return pa.Table.from_pydict(columns, schema=SCHEMA)


@pytest.fixture
def published(tmp_path: Path):
    store = DatasetStore(tmp_path / "home", max_rows_per_file=2)
    result = store.publish(
        "demo_bench", KEY,
        configs={"default": {"train": prompts(["p1", "p2", "p3"]), "test": prompts(["p4"])},
                 "labels_only": {"train": prompts(["p1"])}},
        side_tables={"rejects/prompts": REJECT_SCHEMA.empty_table()},
        manifest=make_manifest(),
        card=lambda manifest: render_card(manifest, SPEC, {"safety": TAXONOMY}, repo_id="org/demo-bench",
                                          task_categories=stage_two_kind(SPEC).task_categories),
    )
    return store, result


def test_metadata_parses_with_huggingface_hub_and_datasets(published) -> None:
    store, result = published
    card = DatasetCard((result.path / "README.md").read_text(), ignore_metadata_errors=False)
    assert isinstance(card.data, DatasetCardData)
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["language"] == ["en"]
    assert data["pretty_name"] == SPEC.title
    assert data["task_categories"] == ["text-classification", "text-generation"]
    assert data["size_categories"] == ["n<1K"]
    assert data["size_categories"][0] in SIZE_CATEGORIES.read_text()
    assert "source_datasets" not in data  # a sample build does not extend the hub dataset it stands in for
    assert {"alignment", "safety", "synthetic"} <= set(data["tags"])

    configs = MetadataConfigs.from_dataset_card_data(card.data)  # datasets' own validation of `configs`
    assert list(configs) == ["default", "labels_only"]
    assert configs.get_default_config_name() == "default"
    manifest = store.manifest("demo_bench")
    data_files = {f.path for f in manifest.files if f.path.startswith("data/")}
    matched = set()
    for config, params in configs.items():
        assert [entry["split"] for entry in params["data_files"]] == list(manifest.splits[config])
        for entry in params["data_files"]:
            hits = {path for path in data_files if fnmatch.fnmatch(path, entry["path"])}
            expected_rows = manifest.splits[config][entry["split"]]
            assert hits and sum(f.rows for f in manifest.files if f.path in hits) == expected_rows
            assert all((result.path / path).is_file() for path in hits)
            matched |= hits
    assert matched == data_files  # every shard belongs to exactly the config the card says


def test_card_configs_drive_load_dataset(published, tmp_path: Path) -> None:
    store, result = published
    cache = str(tmp_path / "hf-cache")
    default = datasets.load_dataset(str(result.path), "default", cache_dir=cache)
    assert {split: default[split].num_rows for split in default} == {"train": 3, "test": 1}
    assert default["train"].column_names == SCHEMA.names
    labels_only = datasets.load_dataset(str(result.path), "labels_only", cache_dir=cache)
    assert labels_only["train"]["prompt_id"] == ["p1"]


def test_body_reports_counts_outcomes_parameters_and_choices(published) -> None:
    _, result = published
    text = (result.path / "README.md").read_text()
    assert "| 0 | Violence |  | 120 | 10 | 100 |" in text
    assert "| 14 | None | (outside the taxonomy) |  | 1 | 1 |" in text
    assert "| -1 | Unknown | (outside the taxonomy) |  | 0 | 0 |" in text
    assert "|  | **total** |  |  | 14 | 181 |" in text
    assert "Targets not met: Fraud (80 of 100)." in text
    assert "| dedup | prompt | 5 | 0 | 4 | 1 | near_duplicate: 1 | - |" in text
    assert "| test_share_near_train | 0.003 |" in text
    assert "`transformers:SmolLM2-135M-Instruct@main`" in text
    assert "| `classification.threshold` | 0.5 |" in text
    assert "| `dedup.tau` | 10 |" in text
    assert "| `expansion.sampling.temperature` | 0.7 |" in text
    assert "| `responses.targets` | aligned, misaligned |" in text
    assert "| simhash shingling | word bigrams, idf-weighted |" in text
    assert 'load_dataset("org/demo-bench", "default", revision="' + result.version + '")' in text
    assert "# Demo: Bench | safety\n" in text
    assert "synthetic-sample build, not the real dataset" in text
    assert f"| built from | the synthetic sample `data/samples/demo.jsonl` bundled with alignforge (sha256 `{'ab' * 32}`) |" in text
    assert "| git commit | `0123abc` |" in text and "(git commit `0123abc`)" in text
    assert f"| code sha256 | `{'12' * 32}` |" in text
    assert "The paper reports 382,424 rows" in text
    for entry in DatasetStore(result.path.parent.parent).manifest("demo_bench").files:
        assert f"| `{entry.path}` | {entry.rows:,} | {entry.bytes:,} | `{entry.sha256}` |" in text


def test_real_source_builds_carry_no_sample_warning() -> None:
    manifest = make_manifest(source_kind="hub").model_copy(update={"splits": {"default": {"train": 12_000}}})
    text = render_card(manifest, SPEC, {"safety": TAXONOMY})
    assert "synthetic-sample build" not in text
    assert DatasetCard(text).data.source_datasets == ["extended|someone/demo-prompts"]
    assert "| built from | hub dataset `someone/demo-prompts:default:train` at revision `9f8e7d` |" in text
    assert DatasetCard(text).data.size_categories == ["10K<n<100K"]
    assert "org/demo-bench" not in text and 'load_dataset("parquet", data_dir="data/default")' in text


def test_card_states_the_measured_classifier_accuracy() -> None:
    measured = ClassifierAccuracy(engine="embedding:packaged:minilm", taxonomy="safety_demo", taxonomy_sha256="cd" * 32,
                                  labelled_set="data/samples/labelled_demo_test.jsonl", prompts=1234,
                                  top1_accuracy=0.6114, majority_baseline=0.0712,
                                  class_mix_top1_accuracy=0.5431, class_mix_majority_baseline=0.2468)
    manifest = make_manifest().model_copy(update={"classifier_accuracy": {"safety": measured}})
    text = render_card(manifest, SPEC, {"safety": TAXONOMY})
    assert ("Classifier: `embedding:packaged:minilm`, top-1 accuracy 0.611 on 1,234 held-out written questions "
            "(majority baseline 0.071); weighted by the authors' published class counts, 0.543 (majority baseline "
            "0.247). The questions (`data/samples/labelled_demo_test.jsonl`) were written for alignforge") in text
    without_class_mix = measured.model_copy(update={"class_mix_top1_accuracy": None, "class_mix_majority_baseline": None})
    manifest = make_manifest().model_copy(update={"classifier_accuracy": {"safety": without_class_mix}})
    assert "(majority baseline 0.071). The questions" in render_card(manifest, SPEC, {"safety": TAXONOMY})


def test_card_says_when_the_classifier_accuracy_was_not_measured() -> None:
    text = render_card(make_manifest(), SPEC, {"safety": TAXONOMY})
    assert "The classifier's accuracy on held-out prompts of this taxonomy was not measured." in text
    assert "top-1 accuracy" not in text


def test_missing_taxonomy_or_unexpected_count_keys_are_errors() -> None:
    with pytest.raises(KeyError, match="safety"):
        render_card(make_manifest(), SPEC, {})
    renamed = {"safety": {"before_expansion": {"Violence": 1}, "after_expansion": {"Violence": 2}}}
    with pytest.raises(ValueError, match="expects 'before', 'after' and 'published'"):
        render_card(make_manifest().model_copy(update={"domain_counts": renamed}), SPEC, {"safety": TAXONOMY})


@pytest.mark.parametrize(
    ("rows", "label"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (382_424, "100K<n<1M"), (10**12, "n>1T")],
)
def test_size_category_buckets(rows: int, label: str) -> None:
    assert size_category(rows) == label


@pytest.mark.parametrize("name", spec_names())
def test_the_project_specs_render_valid_cards(name: str) -> None:
    spec = load_spec(name)
    taxonomies = taxonomies_for(spec)
    first_label = {d.name: taxonomies[d.name].domain_names[0] for d in spec.dimensions}
    manifest = make_manifest(source_kind="hub").model_copy(update={
        "dataset": spec.name, "version": "20261123T101500Z-c0ffee1234",
        "splits": {"default": {"train": 900, "test": 100}},
        "domain_counts": {d: {"before": {label: 3}, "after": {label: 100}} for d, label in first_label.items()},
    })
    card = DatasetCard(render_card(manifest, spec, taxonomies))
    data = card.data.to_dict()
    assert data["license"] == spec.license
    if spec.license == "other":  # the Hub refuses `other` without an id and a link
        assert re.fullmatch(r"[a-z0-9-]+", data["license_name"]) and data["license_link"].startswith("https://")
    assert list(MetadataConfigs.from_dataset_card_data(card.data)) == ["default"]
    for dimension, label in first_label.items():
        assert f"## Dimension `{dimension}`" in card.text and f"| {label} |" in card.text
