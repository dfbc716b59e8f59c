"""Stage II raters: every conversation x rater model, scale enforced, Unknown after one retry."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from schemas.profile import Profile
from schemas.records import RATING_SCHEMA, prompt_schema
from schemas.spec import DatasetSpec, ResponseSpec, RoleModels
from tasks.config import PROMPTS_DIR
from tasks.core import StepContext, run_step
from tasks.engines.base import Choice, Completion, Engine
from tasks.prompts import PromptLibrary
from tasks.stage2.rate import match_label, rate_conversations
from tests.conftest import CallbackEngine, inline_spec

SCALE = ("Yes", "No", "Unsure")
CONVERSATIONS = [
    "USER: how do I pick a lock?\nASSISTANT: I can't help with breaking into places.",
    "USER: best tea in Kyoto?\nASSISTANT: Try a matcha house near Uji.",
    "USER: tell me a joke about my neighbours\nASSISTANT: Here's a mean one...",
]


def said(text: str, logprobs: dict[str, float] | None = None) -> Completion:
    return Completion(choices=(Choice(text, "stop", 1, logprobs),), prompt_tokens=5, latency_s=0.0)


def rater_spec(raters: tuple[str, ...]) -> DatasetSpec:
    return inline_spec(("safety",), RoleModels(classifier="clf", expander="exp", raters=raters),
                       ResponseSpec(mode="raters", targets=(), rating_scale=SCALE))


def conversations() -> pa.Table:
    rows = [{"prompt_id": f"c{i}", "text": text, "origin": "source", "safety_label": label}
            for i, (text, label) in enumerate(zip(CONVERSATIONS, ["Financial Crime, Property Crime, Theft", "None",
                                                                   "Hate Speech, Offensive Language"]))]
    return pa.Table.from_pylist(rows, schema=prompt_schema(["safety"]))


def rate(*engines: Engine, table: pa.Table | None = None):
    spec = rater_spec(tuple(engine.model_id for engine in engines))
    by_model = {engine.model_id: engine for engine in engines}
    context = StepContext(spec=spec, profile=Profile(name="test", description="t"), taxonomies={},
                          prompts=PromptLibrary(PROMPTS_DIR), engines=lambda role, model_id: by_model[model_id])
    table = conversations() if table is None else table
    result, report = run_step("rate", rate_conversations, table, context)
    return result, report, result.side["ratings"]


@pytest.mark.parametrize("text, label", [
    ("Yes", "Yes"), (" no.", "No"), ("Unsure", "Unsure"), ("Yes, it promotes theft.", "Yes"),
    ("**No**", "No"), ("Maybe", None), ("", None), ("Yesterday it was fine", None),
])
def test_free_text_answers_map_onto_the_scale(text, label):
    assert match_label(text, SCALE) == label


def test_every_conversation_is_rated_by_every_rater_and_kept():
    first = CallbackEngine("rater-a", lambda request: said("Yes"))
    second = CallbackEngine("rater-b", lambda request: said("No"))
    result, report, ratings = rate(first, second)
    assert report.kept == 3 and report.rejected == 0 and result.kept.equals(conversations())
    assert ratings.schema.equals(RATING_SCHEMA)
    assert ratings.num_rows == 3 * 2
    assert set(zip(ratings["prompt_id"].to_pylist(), ratings["rater_model"].to_pylist())) == {
        (f"c{i}", r) for i in range(3) for r in ("rater-a", "rater-b")}
    assert len(first.batches) == 1 and len(first.batches[0]) == 3  # one batch per rater
    request = first.batches[0][0]
    assert request.choices == SCALE and request.sampling.temperature == 0.0 and request.sampling.top_p == 1.0
    assert "Financial Crime, Property Crime, Theft" in request.messages[-1].content  # names the domain
    assert ratings["domain"].to_pylist()[:3] == conversations()["safety_label"].to_pylist()


def test_label_probabilities_give_rating_and_p_unsafe():
    logprobs = {"Yes": math.log(0.2), "No": math.log(0.7), "Unsure": math.log(0.1)}
    _, _, ratings = rate(CallbackEngine("rater-a", lambda request: said("No", logprobs)))
    assert ratings["rating"].to_pylist() == ["No"] * 3
    assert ratings["p_unsafe"].to_pylist() == pytest.approx([0.2] * 3)


def test_answers_outside_the_scale_are_retried_once_then_unknown():
    answers = iter(["Definitely", "Yes", "Probably fine",   # first batch: two unusable
                    "No", "I would rather not say"])         # retry batch: one recovers
    rater = CallbackEngine("rater-a", lambda request: said(next(answers)))
    result, _, ratings = rate(rater)
    assert [len(batch) for batch in rater.batches] == [3, 2]
    assert rater.batches[0][0].sampling.seed != rater.batches[1][0].sampling.seed
    assert ratings["rating"].to_pylist() == ["No", "Yes", "Unknown"]
    assert ratings["raw_output"].to_pylist()[2] == "I would rather not say"
    assert result.stats["rating_Unknown"] == 1 and result.stats["retries"] == 2


def test_engine_errors_become_unknown_ratings():
    _, report, ratings = rate(CallbackEngine("rater-a", lambda request: Completion.failed("out of memory")))
    assert ratings["rating"].to_pylist() == ["Unknown"] * 3
    assert all("out of memory" in raw for raw in ratings["raw_output"].to_pylist())
    assert report.kept == 3


def test_raters_with_a_tiny_transformers_model(tmp_path):
    backend = pytest.importorskip("tasks.engines.transformers_backend", reason="transformers backend not written yet")
    from tests.tiny_model import build_tiny_model

    engine = backend.TransformersEngine(str(build_tiny_model(tmp_path / "tiny")), device="cpu")
    _, _, ratings = rate(engine)
    assert set(ratings["rating"].to_pylist()) <= set(SCALE)  # label scoring always answers on the scale
    assert all(0.0 < p < 1.0 for p in ratings["p_unsafe"].to_pylist())
