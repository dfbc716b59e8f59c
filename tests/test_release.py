"""Release layouts: column sets, one row per key, ids joined (never positions), stable order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schemas.records import (
    RATING_SCHEMA,
    RESPONSE_SCHEMA,
    annotation_schema,
    prompt_schema,
    release_columns,
)
from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec, ResponseSpec, RoleModels
from tasks.core import text_sha
from tasks.kinds import release_tables
from tasks.release.tables import ReleaseIntegrityError, engine_ids, with_engine_columns
from tests.conftest import TEST_PROFILE, inline_spec

AUTHORS_CULTURAX_COLUMNS = {"question", "class", "domain", "helpful_response", "harmless_response",
                            "honest_response", "simhash", "pass_hhh"}
TEXTS = {"p0": "Why do people light lamps for Diwali?", "p1": "What is a hanbok worn for?",
         "p2": "How is Carnival celebrated in Rio?", "gone": "A prompt a later step dropped."}


def spec_for(mode: str, dimensions: tuple[str, ...], generators: tuple[str, ...] = (), raters: tuple[str, ...] = (),
             targets: tuple[str, ...] = ()) -> DatasetSpec:
    models = RoleModels(classifier="clf", expander="exp", generators=generators, judge="judge" if generators else None,
                        raters=raters)
    return inline_spec(dimensions, models, ResponseSpec(mode=mode, targets=targets))


def prompts(dimensions: tuple[str, ...], ids: tuple[str, ...] = ("p1", "p0", "p2")) -> pa.Table:
    labels = {"cultural": ("Festivals", 15), "safety": ("None", 0), "value": ("Tradition", 40),
              "semantic_type": ("object", 1)}
    rows = [{"prompt_id": pid, "text": TEXTS[pid], "origin": "source", "source_id": f"src-{pid}", "simhash": 2**63 + i,
             "generator_model": None,
             **{f"{d}_{part}": value for d in dimensions for part, value in zip(("label", "id"), labels[d], strict=True)}}
            for i, pid in enumerate(ids)]
    table = pa.Table.from_pylist(rows, schema=prompt_schema(dimensions))
    return table.append_column("split", pa.array(["train", "test", "train"][:len(ids)], pa.string()))


def responses(targets: tuple[str, ...], generators: tuple[str, ...], prompt_ids=("p0", "p1", "p2", "gone")) -> pa.Table:
    """Two candidates per (prompt, generator, target): attempt 1 is the selected one."""
    rows = [
        {"response_id": f"{pid}-{g}-{t}-{attempt}", "prompt_id": pid, "prompt_sha": text_sha(TEXTS[pid]), "target": t,
         "generator_model": g, "template_sha": "sha", "attempt": attempt, "feedback_round": 0,
         "text": f"{t} answer {attempt} from {g} to {pid}", "finish_reason": "stop", "completion_tokens": 9,
         "judge_score": 5.0 + 3 * attempt, "judge_critique": "", "passed": attempt == 1}
        for pid in prompt_ids for g in generators for t in targets for attempt in (0, 1)
    ]
    return pa.Table.from_pylist(rows, schema=RESPONSE_SCHEMA)


def test_hhh_default_is_one_row_per_prompt_with_the_authors_columns():
    spec = spec_for("hhh", ("cultural",), generators=("gen",), targets=("helpful", "harmless", "honest"))
    tables = release_tables(prompts(("cultural",)), {"responses": responses(spec.responses.targets, ("gen",))}, spec)
    default = tables["default"]
    assert AUTHORS_CULTURAX_COLUMNS <= set(default.column_names)
    assert default.column_names[:8] == ["question", "class", "domain", "helpful_response", "harmless_response",
                                        "honest_response", "simhash", "pass_hhh"]
    assert default["prompt_id"].to_pylist() == ["p0", "p1", "p2"]  # ordered by id, whatever the input order
    assert default["question"].to_pylist() == [TEXTS[p] for p in ("p0", "p1", "p2")]
    assert default["helpful_response"].to_pylist() == [f"helpful answer 1 from gen to {p}" for p in ("p0", "p1", "p2")]
    assert default["class"].to_pylist() == [15] * 3 and default["domain"].to_pylist() == ["Festivals"] * 3
    assert default["pass_hhh"].to_pylist() == [True] * 3 and default["honest_score"].to_pylist() == [8.0] * 3
    assert default["split"].to_pylist() == ["test", "train", "train"]
    assert default.schema.field("simhash").type == pa.uint64() and default["simhash"][0].as_py() == 2**63 + 1
    assert "expansion_model" in default.column_names and "cultural_raw" not in default.column_names

    long = tables["responses"]
    assert long.num_rows == 3 * 3 * 2 and "gone" not in long["prompt_id"].to_pylist()  # dropped prompt left out
    assert long["split"].to_pylist()[:6] == ["test"] * 6
    keys = list(zip(long["prompt_id"].to_pylist(), long["target"].to_pylist(), long["attempt"].to_pylist()))
    assert keys[:4] == [("p0", "helpful", 0), ("p0", "helpful", 1), ("p0", "harmless", 0), ("p0", "harmless", 1)]


def test_aligned_misaligned_default_is_one_row_per_prompt_and_generator():
    dimensions = ("safety", "value", "cultural", "semantic_type")
    spec = spec_for("aligned_misaligned", dimensions, generators=("gen-a", "gen-b"), targets=("aligned", "misaligned"))
    answers = responses(("aligned", "misaligned"), ("gen-a", "gen-b"))
    default = release_tables(prompts(dimensions), {"responses": answers}, spec)["default"]
    assert default.num_rows == 3 * 2
    keys = list(zip(default["prompt_id"].to_pylist(), default["generator_model"].to_pylist()))
    assert keys == [(p, g) for p in ("p0", "p1", "p2") for g in ("gen-a", "gen-b")]
    expected = {"prompt", "aligned_response", "misaligned_response", "aligned_score", "misaligned_score",
                "pass_aligned", "pass_misaligned", "simhash", "origin", "source_id", "split",
                *[f"{d}_{part}" for d in dimensions for part in ("label", "id")]}
    assert expected <= set(default.column_names)
    assert default["semantic_type_label"].to_pylist() == ["object"] * 6
    assert default["misaligned_response"].to_pylist()[1] == "misaligned answer 1 from gen-b to p0"


def test_responses_on_the_wrong_prompt_block_the_release():
    spec = spec_for("hhh", ("cultural",), generators=("gen",), targets=("helpful", "harmless", "honest"))
    shifted = responses(spec.responses.targets, ("gen",))
    ids = shifted["prompt_id"].to_pylist()
    shifted = shifted.set_column(1, "prompt_id", pa.array(ids[6:] + ids[:6], pa.string()))  # one prompt off
    with pytest.raises(ReleaseIntegrityError, match="answers other text"):
        release_tables(prompts(("cultural",)), {"responses": shifted}, spec)


def test_release_does_not_depend_on_input_order():
    spec = spec_for("hhh", ("cultural",), generators=("gen",), targets=("helpful", "harmless", "honest"))
    table, answers = prompts(("cultural",)), responses(spec.responses.targets, ("gen",))
    reverse = lambda t: t.take(pa.array(range(t.num_rows - 1, -1, -1)))
    forward = release_tables(table, {"responses": answers}, spec)
    backward = release_tables(reverse(table), {"responses": reverse(answers)}, spec)
    assert all(forward[name].equals(backward[name]) for name in forward)


def test_raters_configs_hold_human_and_model_ratings():
    spec = spec_for("raters", ("safety",), raters=("rater-a", "rater-b"))
    table = prompts(("safety",), ids=("p1", "p0"))
    columns = {"rater_id": "string", "rater_gender": "string", "Q_overall": "string"}
    annotations = pa.Table.from_pylist([
        {"prompt_id": pid, "source_row": row, "rater_id": f"r{rater}", "rater_gender": "Woman", "Q_overall": "No"}
        for row, (pid, rater) in enumerate((pid, rater) for pid in ("p0", "p1", "gone") for rater in range(3))
    ], schema=annotation_schema(columns))
    ratings = pa.Table.from_pylist([
        {"prompt_id": pid, "rater_model": model, "domain": "None", "rating": "No", "p_unsafe": 0.1,
         "raw_output": "No", "template_sha": "sha"}
        for model in ("rater-b", "rater-a") for pid in ("p1", "p0")
    ], schema=RATING_SCHEMA)
    tables = release_tables(table, {"ratings": ratings, "annotations": annotations}, spec)

    default = tables["default"]
    assert default.num_rows == 2 * 3  # one row per (conversation, human rater); the dropped one is gone
    assert list(zip(default["prompt_id"].to_pylist(), default["rater_id"].to_pylist())) == [
        (p, f"r{r}") for p in ("p0", "p1") for r in range(3)]
    assert {"conversation", "safety_label", "safety_id", "rater_gender", "Q_overall", "source_row", "split"} <= set(
        default.column_names)
    assert default["source_row"].to_pylist() == [0, 1, 2, 3, 4, 5]  # the rater row, not the conversation's

    llm = tables["llm_ratings"]
    assert list(zip(llm["prompt_id"].to_pylist(), llm["rater_model"].to_pylist())) == [
        ("p0", "rater-a"), ("p0", "rater-b"), ("p1", "rater-a"), ("p1", "rater-b")]
    assert {"conversation", "rating", "p_unsafe", "safety_label", "split"} <= set(llm.column_names)
    assert pc.all(pc.equal(llm["conversation"], pc.if_else(pc.equal(llm["prompt_id"], "p0"), TEXTS["p0"],
                                                           TEXTS["p1"]))).as_py()


def test_every_model_column_names_the_engine_that_produced_the_row():
    spec = spec_for("hhh", ("cultural",), generators=("gen",), targets=("helpful", "harmless", "honest"))
    stand_in = Profile(name="cpu", description="one small model for every role",
                       default_engine=EngineConfig(backend="transformers", model="packaged:smollm2"))
    table = prompts(("cultural",))
    expanded = table.set_column(table.column_names.index("generator_model"), "generator_model",
                                pa.array([None, "exp", None], pa.string()))  # p0 (second) was generated
    tables = release_tables(expanded, {"responses": responses(spec.responses.targets, ("gen",))}, spec)
    tables = {name: with_engine_columns(t, engine_ids(spec, stand_in)) for name, t in tables.items()}
    for name, table in tables.items():
        columns = table.column_names
        assert columns[columns.index("generator_model") + 1] == "generator_engine", name
        assert set(table["generator_engine"].to_pylist()) == {"transformers:packaged:smollm2@unpinned"}, name
    default = tables["default"]
    assert default["prompt_id"].to_pylist() == ["p0", "p1", "p2"]
    assert default["expansion_model"].to_pylist() == ["exp", None, None]
    assert default["expansion_engine"].to_pylist() == ["transformers:packaged:smollm2@unpinned", None, None]
    assert {"generator_engine", "expansion_engine"} <= release_columns(spec)  # known to the rename check


def test_rater_rows_name_their_engine_and_unknown_models_block_the_release():
    spec = spec_for("raters", ("safety",), raters=("rater-a",))
    ratings = pa.Table.from_pylist([{"prompt_id": "p0", "rater_model": "rater-a", "rating": "No", "template_sha": "s"}],
                                   schema=RATING_SCHEMA)
    engines = engine_ids(spec, TEST_PROFILE)
    rated = with_engine_columns(ratings, engines)
    assert rated["rater_engine"].to_pylist() == ["scripted:rater-a@unpinned"] and "rater_engine" in release_columns(spec)
    with pytest.raises(ReleaseIntegrityError, match=r"no engine known for models \['rater-a'\]"):
        with_engine_columns(ratings, {model: engine for model, engine in engines.items() if model != "rater-a"})
