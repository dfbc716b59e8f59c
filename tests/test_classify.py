"""Reclassification: closed labels, threshold delta, retries, Unknown with the raw answer."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from schemas.records import prompt_schema
from tasks.stage1.classify import classify_shard, classify_texts, decide, label_probabilities
from tasks.core import run_step
from tasks.engines.base import Choice, Completion
from tasks.engines.scripted import ScriptedEngine


def completion(text: str, logprobs: dict[str, float] | None = None) -> Completion:
    return Completion(choices=(Choice(text, "stop", 1, logprobs),), prompt_tokens=1, latency_s=0.0)


def test_probabilities_from_choice_logprobs_are_normalised() -> None:
    probabilities = label_probabilities(completion("A", {"A": math.log(0.6), "B": math.log(0.2)}), ["A", "B", "C"])
    assert probabilities == pytest.approx({"A": 0.75, "B": 0.25, "C": 0.0})


def test_text_answer_counts_as_certain_and_outside_the_set_is_unusable() -> None:
    assert label_probabilities(completion(" festivals. "), ["Festivals", "Dance"]) == {"Festivals": 1.0, "Dance": 0.0}
    assert label_probabilities(completion("Cooking"), ["Festivals", "Dance"]) is None
    assert label_probabilities(Completion.failed("boom"), ["Festivals"]) is None


def test_threshold_decides_between_label_and_unknown(context_for) -> None:
    taxonomy = context_for("culturax", ScriptedEngine([])).taxonomies["cultural"]
    names = taxonomy.allowed_labels
    confident = {name: 0.0 for name in names} | {"Festivals": 0.7, "Dance": 0.3}
    decision = decide(confident, taxonomy, 0.5, None)
    assert (decision.label, decision.label_id, decision.score, decision.labels) == ("Festivals", 15, 0.7, ("Festivals",))
    split = {name: 0.0 for name in names} | {"Festivals": 0.45, "Dance": 0.55}
    assert decide(split, taxonomy, 0.6, None).label == "Unknown"
    assert decide(split, taxonomy, 0.6, None).label_id == -1
    multi = {name: 0.0 for name in names} | {"Festivals": 0.5, "Dance": 0.5}
    assert set(decide(multi, taxonomy, 0.5, None).labels) == {"Festivals", "Dance"}


def test_out_of_set_answers_are_retried_then_unknown_with_raw_text(context_for) -> None:
    answers = iter(["Cooking", "Still cooking"])
    engine = ScriptedEngine(lambda request: next(answers))
    context = context_for("culturax", engine)
    [decision] = classify_texts(["How are mooncakes made?"], "cultural", context)
    assert decision.label == "Unknown" and decision.raw == "Still cooking"
    assert engine.usage.requests == context.spec.classification.max_attempts


def test_retry_recovers_a_bad_first_answer(context_for) -> None:
    answers = iter(["garbage", "Culinary Arts"])
    context = context_for("culturax", ScriptedEngine(lambda request: next(answers)))
    [decision] = classify_texts(["How are mooncakes made?"], "cultural", context)
    assert decision.label == "Culinary Arts" and decision.score == 1.0


def test_classify_shard_labels_and_rejects_unlabelled_rows(context_for) -> None:
    context = context_for("culturax", ScriptedEngine({"mooncakes": "Culinary Arts", "weather": "None"}))
    rows = [{"prompt_id": "p1", "text": "How are mooncakes made?", "origin": "source", "parent_ids": []},
            {"prompt_id": "p2", "text": "What is the weather like?", "origin": "source", "parent_ids": []}]
    table = pa.Table.from_pylist(rows, schema=prompt_schema(["cultural"]))
    result, report = run_step("classify", classify_shard, table, context)
    assert result.kept["cultural_label"].to_pylist() == ["Culinary Arts"]
    assert result.kept["cultural_id"].to_pylist() == [11]
    assert result.rejects["reason"].to_pylist() == ["unlabelled"]
    assert report.rows_in == report.kept + report.rejected == 2


def test_requests_are_closed_choices_over_the_taxonomy(context_for) -> None:
    seen = []

    def answer(request):
        seen.append(request)
        return "Dance"

    context = context_for("culturax", ScriptedEngine(answer))
    classify_texts(["Where can I learn flamenco?"], "cultural", context)
    taxonomy = context.taxonomies["cultural"]
    assert seen[0].choices == tuple(taxonomy.allowed_labels)
    assert len(seen[0].choices) == 31  # 30 subdomains + None
    assert seen[0].messages[-1].content == "Where can I learn flamenco?"
