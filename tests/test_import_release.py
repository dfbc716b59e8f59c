"""The authors' CULTURAX release imported as a version: our layout, our fingerprints, every
response tied to its question; the benchmark runs on it as on a build, and diff compares it
with a build by labels, lengths and SimHash overlap."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.benchmark import BenchmarkOptions, run_benchmark
from flows.cli import app
from flows.import_release import import_release
from tasks.config import ConfigError, load_spec, load_taxonomy
from tasks.core import text_sha
from tasks.release.compare import compare_versions
from tasks.release.store import DatasetStore
from tests.messy_files import authors_culturax_release
from tests.test_benchmark import FAST, HHH_QUESTIONS, ScriptedEngines, hhh_judge, make_spec, publish, value_of

JUDGE = load_spec("culturax").models.judge


def authors_rows() -> list[dict[str, str]]:
    rows = [{"Question": f"Tell me about it <<{q}>> and its caf\u00e9s\u2019 customs", "class": "99", "domain": domain,
             "helpful_response": f"helpful ref {q}", "harmless_response": f"harmless ref {q}",
             "honest_response": f"honest ref {q}", "simhash_id": f"1.4{i}E+19", "pass_hhh": "True"}
            for i, (q, (domain, *_)) in enumerate(HHH_QUESTIONS.items())]
    rows.append({**rows[0], "Question": "Which songs open a fado night?", "domain": "Live Music"})  # not a CULTURAX label
    rows.append({**rows[0], "Question": "   "})  # empty question
    return rows


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return authors_culturax_release(tmp_path / "CulturaX.csv", authors_rows())


def test_the_release_becomes_a_version_in_our_layout_with_our_fingerprints(release: Path, home: Path) -> None:
    result = import_release("culturax", str(release))
    assert not result["reused"] and (result["rows"], result["rejected"]) == (3, 2)
    store = DatasetStore(home)
    default = store.read("culturax", result["version"]).to_pylist()
    taxonomy = load_taxonomy("culturax")
    assert sorted(row["domain"] for row in default) == ["Crafts", "Festivals", "Festivals"]
    for row in default:
        assert row["question"].endswith("caf\u00e9s\u2019 customs")  # cp1252 bytes decoded
        assert row["class"] == taxonomy.label_id(row["domain"]) and row["source_class"] == "99"
        assert row["simhash"] > 0 and row["source_simhash_id"].endswith("E+19")  # theirs kept as written
        assert row["pass_hhh"] is True and row["helpful_response"].startswith("helpful ref")
    responses = store.read("culturax", result["version"], "responses").to_pylist()
    by_prompt = {row["prompt_id"]: row for row in default}
    assert len(responses) == 3 * 3
    for response in responses:
        question = by_prompt[response["prompt_id"]]
        assert response["prompt_sha"] == text_sha(question["question"]) and response["passed"]
        assert response["response_id"] == question[f"{response['target']}_response_id"]
        assert response["text"] == question[f"{response['target']}_response"]

    manifest = store.manifest("culturax", result["version"])
    assert (manifest.source.kind, manifest.source.fallback_encoding) == ("import", "cp1252")
    assert [(s.stage, s.rows_in, s.kept, s.rejected_by_reason) for s in manifest.stages] == [
        ("load", 5, 4, {"empty_text": 1}), ("import", 4, 3, {"unknown_label": 1})]
    card = (store.path("culturax", result["version"]) / "README.md").read_text()
    assert "This version is the authors' own release, imported" in card and str(release) in card
    assert "## Expansion" not in card and "## Models" not in card
    assert import_release("culturax", str(release))["reused"]


def test_the_benchmark_runs_on_an_import_as_on_a_build(release: Path, home: Path) -> None:
    version = import_release("culturax", str(release))["version"]
    engines = ScriptedEngines({"mut/c": lambda request: "MODEL ANSWER", JUDGE: hhh_judge})
    outcome = run_benchmark(BenchmarkOptions(dataset="culturax", models=("mut/c",), version=version, runs=3, **FAST),
                            DatasetStore(home), engines)
    # The same questions and verdicts as the benchmark's own CULTURAX test, so the same figures.
    assert value_of(outcome.summary, "mut/c", "overall", "win_rate")["value"] == pytest.approx(50.0)
    assert value_of(outcome.summary, "mut/c", "overall", "cultural_failure_rate")["value"] == pytest.approx(200 / 3)
    assert value_of(outcome.summary, "mut/c", "overall", "win_rate")["n_items"] == 3


def test_diff_compares_a_build_with_the_release_by_labels_lengths_and_simhash(release: Path, home: Path) -> None:
    questions = [row["Question"] for row in authors_rows()[:3]]
    ours = pd.DataFrame({
        "prompt_id": ["a", "b", "c", "d"], "split": "train", "domain": ["Festivals", "Dance", "Crafts", "Crafts"],
        "question": [questions[0], questions[1].replace("Tell", "Do tell"), "How are Kente cloths woven in Ghana?",
                     "What do Oaxacan alebrije carvers paint first?"]})
    build = publish(home, "culturax", make_spec("culturax", "hhh", [("cultural", "culturax")]), {"default": ours})
    imported = import_release("culturax", str(release))["version"]

    comparison = compare_versions(DatasetStore(home), "culturax", build, imported)
    labels = comparison.labels.set_index("domain")
    assert labels[build].to_dict() == {"Crafts": 2, "Dance": 1, "Festivals": 1}
    assert labels[imported].to_dict() == {"Crafts": 1, "Dance": 0, "Festivals": 2}
    assert comparison.lengths["prompts"].tolist() == [4, 3]
    overlap = comparison.overlap.set_index("prompts of")
    assert overlap.loc[build, "identical text"] == 1 and overlap.loc[imported, "identical text"] == 1
    assert overlap.loc[build, "near-duplicate"] == 2  # the identical one and the one-word edit

    output = CliRunner().invoke(app, ["diff", "culturax", build, imported, "--home", str(home)]).output
    assert "overlap by SimHash" in output and "identical text" in output and "mean characters" in output


def test_the_cli_imports_and_only_hhh_releases_can_be_imported(release: Path, home: Path) -> None:
    result = CliRunner().invoke(app, ["import", "culturax", str(release), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "imported (3 rows, 2 rejected)" in result.output
    with pytest.raises(ConfigError, match="import reads releases in the CULTURAX layout"):
        import_release("savacu", str(release))


def test_rejects_of_an_import_keep_their_reasons(release: Path, home: Path) -> None:
    folder = Path(import_release("culturax", str(release))["path"])
    rejects = pq.read_table(folder / "rejects" / "rejects.parquet").to_pylist()
    assert sorted((r["stage"], r["reason"]) for r in rejects) == [("import", "unknown_label"), ("load", "empty_text")]
    assert json.loads((folder / "manifest.json").read_text())["source"]["rows"] == 5
