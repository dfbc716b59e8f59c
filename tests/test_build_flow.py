"""The build flow end to end, under Prefect's test harness, on a tiny local model.

Generation roles run a tiny random-weight Llama (plumbing, not content); classification
runs the packaged all-MiniLM-L6-v2. The test spec lowers the judge threshold and the rule
filters so random text can pass: what is checked is the pipeline, the accounting, the
version on disk and that `datasets` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from flows.build import build_dataset
from tasks.config import DATA_DIR
from tasks.release.store import DatasetStore
from tasks.stage1.measured_accuracy import load_measurements
from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("build")
    model = build_tiny_model(root / "tiny-model")
    profile = {
        "name": "tiny", "description": "tiny random model, MiniLM classifier", "source": "sample",
        "default_engine": {"backend": "transformers", "model": str(model), "device": "cpu", "batch_size": 32},
        "models": {"mistralai/Mistral-7B-Instruct-v0.3": {"backend": "embedding", "model": "packaged:minilm"}},
        "expansion_target": 2, "max_expansion_rounds": 1, "candidates_per_target": 2, "max_response_tokens": 8,
        "feedback_iterations": 1, "judge_mode": "choice", "classification_threshold": 0.2, "limit": 24,
        "shard_size": 8,
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(profile))
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["responses"].update(judge_threshold=0.0, filters={
        "min_words": 0, "max_prompt_echo": 1.0, "min_english_share": 0.0, "near_duplicate_tau": 0,
        "refusal_rejected_for": [], "reject_truncated": False})
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"profile": root / "tiny.yaml", "spec": root / "culturax.yaml"}


def test_build_publishes_a_loadable_version_whose_counts_add_up(prefect_harness, tiny_files, tmp_path) -> None:
    home = tmp_path / "home"
    result = build_dataset(dataset=str(tiny_files["spec"]), profile=str(tiny_files["profile"]), home=str(home))
    assert not result["reused"]
    folder = Path(result["path"])
    manifest = json.loads((folder / "manifest.json").read_text())

    for stage in manifest["stages"]:
        assert stage["rows_in"] + stage["added"] == stage["kept"] + stage["rejected"], stage
        if stage["candidates_generated"] is not None:
            candidates_rejected = sum(stage["candidates_rejected_by_reason"].values())
            assert stage["candidates_generated"] == stage["candidates_kept"] + candidates_rejected, stage
    stages = {s["stage"]: s for s in manifest["stages"]}
    assert list(stages) == ["load", "classify", "dedup", "expand", "split", "respond"]
    assert stages["load"]["rows_in"] == 140  # every line of the sample, bad rows included

    rejects = pq.read_table(folder / "rejects" / "rejects.parquet")
    # Stage reports count their own unit; candidates (expansion, Stage II) are counted apart.
    candidates_rejected = sum(sum(s["candidates_rejected_by_reason"].values()) for s in manifest["stages"])
    assert rejects.num_rows == sum(s["rejected"] for s in manifest["stages"]) + candidates_rejected

    default = datasets.load_dataset("parquet", data_dir=str(folder / "data" / "default"))
    rows = sum(len(split) for split in default.values())
    assert rows == stages["respond"]["kept"] > 0
    train = default["train"]
    for column in ("question", "class", "domain", "helpful_response", "harmless_response", "honest_response",
                   "simhash", "pass_hhh", "prompt_id"):
        assert column in train.column_names
    counts = manifest["splits"]["default"]
    assert sum(counts.values()) == rows
    # The classifier is the local profile's MiniLM on the CULTURAX taxonomy: the card states its measured accuracy.
    measured, = (m for m in load_measurements() if m.engine == "embedding:packaged:minilm" and m.taxonomy == "culturax")
    assert manifest["classifier_accuracy"] == {"cultural": measured.model_dump(mode="json")}
    assert (f"top-1 accuracy {measured.top1_accuracy:.3f} on {measured.prompts:,} held-out written questions"
            in (folder / "README.md").read_text())
    # Same inputs again: the existing version is found, nothing is rebuilt.
    again = build_dataset(dataset=str(tiny_files["spec"]), profile=str(tiny_files["profile"]), home=str(home))
    assert again["reused"] and again["version"] == result["version"]
    assert DatasetStore(home).latest(manifest["dataset"]) == result["version"]


def test_gpu_profiles_hold_the_global_gpu_slot_per_stage(prefect_harness, tmp_path, monkeypatch) -> None:
    """A GPU profile (engines released between stages) takes the `alignforge-gpu` concurrency
    slot around every model stage, and releases its engines before giving the slot back."""
    import contextlib

    import prefect.concurrency.sync
    from prefect import flow

    import flows.build as build_module
    from tasks.engines.pool import EnginePool
    from tests.conftest import write_scripted_culturax

    events: list[str] = []

    @contextlib.contextmanager
    def recording_concurrency(names, occupy=1, strict=False, **options):
        events.append(f"acquire {names} x{occupy}")
        yield
        events.append("release slot")

    monkeypatch.setattr(prefect.concurrency.sync, "concurrency", recording_concurrency)
    monkeypatch.setattr(EnginePool, "releases_between_stages", property(lambda pool: True))
    real_release = EnginePool.release
    monkeypatch.setattr(EnginePool, "release",
                        lambda pool: (events.append("release engines"), real_release(pool))[1])
    files = write_scripted_culturax(tmp_path)

    @flow
    def build_in_a_flow():
        return build_module.run_build(str(files["spec"]), str(files["profile"]), home=str(tmp_path / "home"))

    assert build_in_a_flow()["version"]
    stage = ["acquire alignforge-gpu x1", "release engines", "release slot"]
    assert events[:9] == stage * 3  # classify, expand, respond


def test_every_step_is_a_named_task_run_with_its_stage_table(prefect_harness, tmp_path) -> None:
    """An operator sees every step, global ones too, as a task run, and a stage table whose
    numbers are the manifest's."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.artifacts import stage_rows
    from schemas.manifest import StageReport
    from tests.conftest import write_scripted_culturax

    files = write_scripted_culturax(tmp_path)
    state = build_dataset(dataset=str(files["spec"]), profile=str(files["profile"]), home=str(tmp_path / "home"),
                          return_state=True)
    result = state.result()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts()
    names = {run.name for run in task_runs}
    for step in ("load", "dedup", "expand", "split"):
        assert f"{step}[culturax]" in names, names
    for step in ("classify", "respond"):
        assert any(name.startswith(f"{step}[culturax shard 1/") for name in names), names

    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    expand = StageReport.model_validate(next(s for s in manifest["stages"] if s["stage"] == "expand"))
    rows = stage_rows(expand)
    value = {(r["measure"], r["unit"], r["reason"]): r["value"] for r in rows}
    assert value[("rows in", "prompt", "")] == expand.rows_in
    assert value[("generated", "candidate", "")] == expand.candidates_generated
    assert sum(v for (measure, unit, reason), v in value.items()
               if measure == "rejected" and unit == "candidate" and reason) == expand.candidates_generated - expand.candidates_kept
    tables = [a for a in artifacts if a.type == "table" and a.flow_run_id == flow_run_id]
    assert len(tables) >= len(manifest["stages"])
