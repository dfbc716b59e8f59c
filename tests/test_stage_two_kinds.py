"""Kinds of Stage II: a new kind is one registry entry, and a build runs it end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from flows.build import run_build
from schemas.spec import DatasetSpec
from tasks.config import ConfigError, load_spec
from tasks.core import StepContext, StepResult, make_rejects
from tasks.engines.base import ChatRequest, Message
from tasks.kinds import KINDS, StageTwoKind, register, stage_two_kind
from tests.conftest import write_scripted_culturax


def paraphrase(table: pa.Table, context: StepContext) -> StepResult:
    """The toy kind's step: one paraphrase per prompt; an empty answer rejects the prompt."""
    model = context.spec.models.generators[0]
    requests = [ChatRequest(messages=(Message(role="user", content=f"Paraphrase: {text}"),))
                for text in table["text"].to_pylist()]
    answers = [c.text.strip() for c in context.engine("generator", model).generate(requests)]
    keep = [bool(answer) for answer in answers]
    ids = table["prompt_id"].to_pylist()
    rejects = make_rejects({"record_id": pid, "unit": "prompt", "stage": "paraphrase", "reason": "empty_paraphrase"}
                           for pid, ok in zip(ids, keep) if not ok)
    side = pa.table({"prompt_id": ids, "paraphrase": answers}).filter(pa.array(keep))
    return StepResult(kept=table.filter(pa.array(keep)), rejects=rejects, side={"paraphrases": side})


def paraphrase_release(prompts: pa.Table, side: Mapping[str, pa.Table], spec: DatasetSpec) -> dict[str, pa.Table]:
    by_id = dict(zip(side["paraphrases"]["prompt_id"].to_pylist(), side["paraphrases"]["paraphrase"].to_pylist()))
    ids = prompts["prompt_id"].to_pylist()
    return {"default": pa.table({"prompt_id": ids, "prompt": prompts["text"], "split": prompts["split"],
                                 "paraphrase": [by_id[pid] for pid in ids]})}


@pytest.fixture
def paraphrase_kind() -> Iterator[StageTwoKind]:
    kind = register(StageTwoKind("paraphrase", "paraphrase", paraphrase,
                                 lambda spec: {"generator": spec.models.generators[:1]}, paraphrase_release,
                                 plan=lambda planner, samples, rows: planner.respond(samples, rows)))
    yield kind
    del KINDS["paraphrase"]


def test_a_toy_kind_registered_once_builds_a_version(paraphrase_kind, tmp_path: Path) -> None:
    files = write_scripted_culturax(tmp_path)
    spec = yaml.safe_load(files["spec"].read_text())
    spec["responses"]["mode"] = "paraphrase"
    files["spec"].write_text(yaml.safe_dump(spec))

    result = run_build(str(files["spec"]), str(files["profile"]), home=str(tmp_path / "home"))

    folder = Path(result["path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["stage"] for s in manifest["stages"]] == ["load", "classify", "dedup", "expand", "split", "paraphrase"]
    published = pq.read_table(next((folder / "data" / "default").glob("*.parquet")))
    assert published.num_rows > 0 and set(published.column_names) >= {"prompt_id", "prompt", "paraphrase"}
    assert all(published["paraphrase"].to_pylist())


def test_unknown_kinds_and_missing_models_fail_with_a_config_error() -> None:
    savacu = load_spec("savacu")
    with pytest.raises(ConfigError, match="not a kind of Stage II"):
        stage_two_kind(savacu.model_copy(update={"responses": savacu.responses.model_copy(update={"mode": "poetry"})}))
    without_judge = savacu.model_copy(update={"models": savacu.models.model_copy(update={"judge": None})})
    with pytest.raises(ConfigError, match="needs models for judge"):
        stage_two_kind(without_judge)
    assert stage_two_kind(load_spec("demo_safetybench")).stage == "rate"
