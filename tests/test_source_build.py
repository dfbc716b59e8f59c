"""A build pointed at the user's own file: the spreadsheet CSV that used to crash the CULTURAX
build (cp1252 text, `1.43E+19` ids, blank trailing columns, the authors' `class` and
`domain` kept) builds and publishes, with the encoding decision in manifest and card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from flows.build import run_build
from tasks.config import DATA_DIR, load_spec
from tests.messy_files import spreadsheet_culturax_csv
from tests.test_four_datasets import CLASSIFIER, WRITER


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("source_build")
    profile = {"name": "scripted", "description": "scripted engines", "source": "sample",
               "default_engine": {"backend": "scripted", "scripted_answers": WRITER},
               "models": {"mistralai/Mistral-7B-Instruct-v0.3": {"backend": "scripted", "scripted_answers": CLASSIFIER}},
               "expansion_target": 0, "max_expansion_rounds": 0, "candidates_per_target": 1,
               "feedback_iterations": 1, "classification_threshold": 0.5, "shard_size": 8}
    (root / "scripted.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["source"]["keep_columns"] = {"class": {"type": "string"}, "domain": {"type": "string"}}
    spec["classification"]["require_label"] = []  # scripted answers leave some questions None
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"profile": root / "scripted.yaml", "spec": root / "culturax.yaml",
            "csv": spreadsheet_culturax_csv(root / "questions.csv")}


def test_a_spreadsheet_csv_builds_and_publishes_with_its_encoding_on_record(inputs, tmp_path: Path) -> None:
    result = run_build(str(inputs["spec"]), str(inputs["profile"]), home=str(tmp_path), source=str(inputs["csv"]))
    folder = Path(result["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    source = manifest["source"]
    assert (source["kind"], source["location"], source["rows"]) == ("path", str(inputs["csv"]), 7)
    assert (source["fallback_encoding"], source["rows_decoded_with_fallback"]) == ("cp1252", 4)
    assert source["column_renames"] == {"class": "source_class", "domain": "source_domain"}
    load = manifest["stages"][0]
    assert (load["rows_in"], load["kept"], load["rejected_by_reason"]) == (7, 6, {"invalid_encoding": 1})

    default = pq.read_table(folder / "data" / "default").to_pylist()
    assert default and {"class", "domain", "source_class", "source_domain"} <= set(default[0])
    assert any("\u2019" in row["question"] for row in default)
    rejects = pq.read_table(folder / "rejects" / "rejects.parquet").to_pylist()
    assert [r["raw"] for r in rejects if r["reason"] == "invalid_encoding"] == [
        b'9.99E+19,"broken \x81\x8d bytes",7,Dance,,,\r\n']
    card = (folder / "README.md").read_text()
    assert "4 rows were not UTF-8 and were decoded as cp1252" in card and "`class` -> `source_class`" in card

    # Another fallback reads the same bytes differently: a new version, never the old one reused.
    again = run_build(str(inputs["spec"]), str(inputs["profile"]), home=str(tmp_path), source=str(inputs["csv"]),
                      encoding="latin-1")
    assert not again["reused"] and again["version"] != result["version"]


def test_the_cli_passes_source_and_encoding_to_the_build(monkeypatch, tmp_path: Path) -> None:
    import flows.build
    from flows.cli import app

    seen = {}

    def fake_build(**parameters):
        seen.update(parameters)
        return {"dataset": "culturax", "version": "v", "path": str(tmp_path), "reused": False, "seconds": 0}

    monkeypatch.setattr(flows.build, "build_with_configured_runner", fake_build)
    result = CliRunner().invoke(app, ["build", "culturax", "--source", "~/data/questions.csv", "--encoding", "latin-1"])
    assert result.exit_code == 0, result.output
    assert (seen["source"], seen["encoding"]) == ("~/data/questions.csv", "latin-1")


def test_a_plan_for_a_given_source_counts_and_samples_that_source(inputs) -> None:
    from tasks.planning.inputs import count_source_rows, sample_prompts

    spec = load_spec(str(inputs["spec"]))
    assert count_source_rows(spec, real=False, location=str(inputs["csv"])).rows == 7
    sample = sample_prompts(spec, real=False, limit=None, location=str(inputs["csv"]))
    assert len(sample.texts) == 6 and sample.prompts_per_row == 6 / 7 and str(inputs["csv"]) in sample.how
