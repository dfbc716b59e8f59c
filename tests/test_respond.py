"""Stage II responses: judge parsing, rejection sampling, feedback bound, accounting, integrity."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schemas.profile import Profile
from schemas.records import prompt_schema
from schemas.spec import DatasetSpec, ResponseSpec, RoleModels
from tasks.config import PROMPTS_DIR
from tasks.core import StepContext, run_step, text_sha
from tasks.engines.base import ChatRequest, Choice, Completion, Engine
from tasks.stage2.judge import (
    SCORE_CHOICES,
    JudgeItem,
    expected_score,
    judge_items,
    parse_judgement,
)
from tasks.prompts import PromptLibrary
from tests.conftest import CallbackEngine, inline_spec
from tasks.kinds import release_tables, stage_two_kind
from tasks.stage2.respond import check_response_integrity

HHH = ("helpful", "harmless", "honest")
PROMPTS = [
    "What is the history of the Holi festival in northern India?",
    "How is kimchi traditionally prepared for the winter in Korea?",
]
VOCABULARY = (
    "spring colour powder sweets family music dance temple harvest winter cabbage salt garlic pepper jar "
    "neighbours village market season ritual story elders children recipe history region custom song lamp "
    "water friends prayer evening street celebration tradition heritage community craft flavour"
).split()


# ----------------------------------------------------------------------------- scaffolding


def completion(*texts: str, finish: str = "stop", logprobs: dict[str, float] | None = None) -> Completion:
    choices = tuple(Choice(text, finish, len(text.split()), logprobs) for text in texts)
    return Completion(choices=choices, prompt_tokens=10, latency_s=0.0)


def target_of(request: ChatRequest) -> str:
    return re.search(r"Target: (\w+)", "\n".join(m.content for m in request.messages)).group(1)


def prompt_of(request: ChatRequest) -> str:
    user = request.messages[-1].content
    return user.split("Prompt:\n", 1)[1].split("\n\nPrevious response:")[0] if "Previous response:" in user else user


def answer_text(quality: int, *salt: object) -> str:
    """A fluent-enough English answer whose words differ per salt (so SimHash keeps them apart)."""
    words = random.Random(repr(salt)).sample(VOCABULARY, 14)
    return f"This answer has quality {quality} and talks about " + " ".join(words) + "."


def scripted_generator(model_id: str, plan: Callable[[str, int, int], int | str]) -> CallbackEngine:
    """plan(target, feedback_round, index) -> a quality (scored by the judge) or a literal text."""
    rounds: Counter[tuple[str, str]] = Counter()

    def answer(request: ChatRequest) -> Completion:
        target, prompt = target_of(request), prompt_of(request)
        feedback_round = rounds[(target, prompt)]
        rounds[(target, prompt)] += 1
        planned = [plan(target, feedback_round, i) for i in range(request.sampling.n)]
        return completion(*(p if isinstance(p, str) else answer_text(p, model_id, prompt, target, feedback_round, i)
                            for i, p in enumerate(planned)))

    return CallbackEngine(model_id, answer)


def json_judge(model_id: str = "judge-model") -> CallbackEngine:
    """Scores the `quality N` a scripted answer carries, with a critique naming the target."""
    def answer(request: ChatRequest) -> Completion:
        quality = int(re.search(r"quality (\d+)", request.messages[-1].content).group(1))
        return completion(json.dumps({"score": quality, "critique": f"add more on {target_of(request)}"}))

    return CallbackEngine(model_id, answer)


def make_spec(mode: str = "hhh", generators: tuple[str, ...] = ("gen-a",), **response_fields) -> DatasetSpec:
    dimensions = ("cultural",) if mode == "hhh" else ("safety", "value", "cultural")
    targets = HHH if mode == "hhh" else ("aligned", "misaligned")
    return inline_spec(dimensions, RoleModels(classifier="clf", expander="exp", generators=generators, judge="judge-model"),
                       ResponseSpec(mode=mode, targets=targets, **response_fields))


def make_context(spec: DatasetSpec, *engines: Engine) -> StepContext:
    by_model = {engine.model_id: engine for engine in engines}
    return StepContext(spec=spec, profile=Profile(name="test", description="t"), taxonomies={},
                       prompts=PromptLibrary(PROMPTS_DIR), engines=lambda role, model_id: by_model[model_id])


def prompts_table(spec: DatasetSpec, texts: Sequence[str] = PROMPTS) -> pa.Table:
    dimensions = [d.name for d in spec.dimensions]
    labels = {"cultural": "Festivals", "safety": "None", "value": "Tradition", "semantic_type": "object"}
    rows = [{"prompt_id": f"p{i}", "text": text, "origin": "source", **{f"{d}_label": labels[d] for d in dimensions}}
            for i, text in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=prompt_schema(dimensions))


def run(spec: DatasetSpec, *engines: Engine, table: pa.Table | None = None):
    table = prompts_table(spec) if table is None else table
    result, report = run_step("respond", stage_two_kind(spec).step, table, make_context(spec, *engines))
    return result, report, result.side["responses"]


def candidate_reasons(result) -> Counter[str]:
    rejects = result.rejects.filter(pc.equal(result.rejects["unit"], "candidate"))
    return Counter(rejects["reason"].to_pylist())


# ----------------------------------------------------------------------------- judge parsing


@pytest.mark.parametrize("text, score, critique", [
    ('{"score": 8, "critique": "clear"}', 8.0, "clear"),
    ('Sure! ```json\n{"score": 6, "critique": "too vague"}\n```', 6.0, "too vague"),
    ('{"note": 1} then {"score": "9", "critique": ""}', 9.0, ""),
    ("7", 7.0, ""),
    ("7/10 - misses the harvest rituals", 7.0, "misses the harvest rituals"),
    ("Score: 10", 10.0, ""),
])
def test_judgements_parse(text, score, critique):
    verdict = parse_judgement(text)
    assert verdict is not None and verdict.score == score and verdict.critique == critique


@pytest.mark.parametrize("text", ["", "no idea", '{"score": 11, "critique": "x"}', "0", '{"score": true}', "{broken"])
def test_unusable_judgements(text):
    assert parse_judgement(text) is None


def test_choice_mode_score_is_the_expected_value():
    assert expected_score({"8": math.log(0.5), "10": math.log(0.5), "other": 0.0}) == pytest.approx(9.0)
    assert expected_score({"yes": 0.0}) is None


def test_unusable_judge_answer_is_retried_once_with_another_seed():
    answers = iter(["garbage", "garbage", '{"score": 8, "critique": "ok"}', "still garbage"])
    judge = CallbackEngine("judge-model", lambda request: completion(next(answers)))
    items = [JudgeItem("prompt", "helpful", "answer", {})] * 2
    verdicts, retries = judge_items(items, make_context(make_spec(), judge))
    assert [v.score for v in verdicts] == [8.0, None] and retries == 2
    assert verdicts[1].raw == "still garbage"
    first, retry = judge.batches
    assert len(first) == 2 and len(retry) == 2  # one batch per attempt, never one call per item
    assert first[0].sampling.seed != retry[0].sampling.seed
    assert first[0].json_schema is not None and first[0].choices is None


# ----------------------------------------------------------------------------- rejection sampling


def test_first_round_pass_selects_the_best_candidate_and_accounts_for_all():
    # helpful candidates score 8, 9, 9: the earliest 9 wins; the others are not_best.
    plan = lambda target, round_, index: [8, 9, 9][index] if target == "helpful" else 7
    generator, judge = scripted_generator("gen-a", plan), json_judge()
    result, report, responses = run(make_spec(candidates=3), generator, judge)

    assert len(generator.batches) == 1 and len(generator.batches[0]) == 2 * 3  # one request (n=K) per task
    assert len(judge.batches) == 1 and len(judge.batches[0]) == 2 * 3 * 3
    assert result.kept.num_rows == 2 and report.rejected == 0
    assert result.candidates_generated == 18 and result.candidates_kept == 6
    chosen = responses.filter(pc.equal(responses["passed"], True))
    helpful = chosen.filter(pc.equal(chosen["target"], "helpful"))
    assert helpful["attempt"].to_pylist() == [1, 1] and helpful["judge_score"].to_pylist() == [9.0, 9.0]
    assert candidate_reasons(result) == Counter({"not_best": 12})
    assert result.kept["helpful_score"].to_pylist() == [9.0, 9.0]
    assert result.kept["pass_hhh"].to_pylist() == [True, True]
    assert result.kept["harmless_score"].to_pylist() == [7.0, 7.0]  # threshold 7 passes
    assert (result.stats["selected"], result.stats["candidates_generated"]) == (6, 18)  # one candidate in three published


def test_feedback_loop_stops_at_its_bound():
    generator, judge = scripted_generator("gen-a", lambda *_: 3), json_judge()
    spec = make_spec(candidates=2, feedback_iterations=2)
    result, report, responses = run(spec, generator, judge, table=prompts_table(make_spec(), PROMPTS[:1]))

    assert len(generator.batches) == 1 + 2
    assert responses.num_rows == 3 * 2 * 3  # targets x K x rounds
    assert sorted(set(responses["feedback_round"].to_pylist())) == [0, 1, 2]
    assert result.kept.num_rows == 0 and report.rejected_by_reason["no_passing_response"] == 1
    detail = result.rejects.filter(pc.equal(result.rejects["unit"], "prompt"))["detail"][0].as_py()
    assert all(target in detail for target in HHH)
    assert candidate_reasons(result) == Counter({"judge_below_threshold": 18})
    assert result.candidates_kept == 0 and not any(responses["passed"].to_pylist())
    # Feedback rounds show the generator the best earlier candidate and the judge's critique.
    feedback_request = generator.batches[1][0]
    assert "Previous response:" in feedback_request.messages[-1].content
    assert "add more on helpful" in feedback_request.messages[-1].content
    assert "score 3" in feedback_request.messages[-1].content


def test_feedback_without_a_scored_candidate_names_the_filter_that_failed():
    plan = lambda target, round_, index: "Too brief." if round_ == 0 else 9
    generator = scripted_generator("gen-a", plan)
    result, _, _ = run(make_spec(candidates=1, feedback_iterations=1), generator, json_judge(),
                       table=prompts_table(make_spec(), PROMPTS[:1]))
    feedback = generator.batches[1][0].messages[-1].content
    assert "Too brief." in feedback and "too short to be useful" in feedback
    assert result.kept.num_rows == 1


def test_feedback_round_rescues_a_failing_target():
    plan = lambda target, round_, index: 9 if target != "honest" or round_ == 1 else 4
    generator, judge = scripted_generator("gen-a", plan), json_judge()
    result, _, responses = run(make_spec(candidates=2, feedback_iterations=2), generator, judge)
    assert len(generator.batches) == 2
    assert len(generator.batches[1]) == 2  # only the open (prompt, honest) tasks resample
    chosen = responses.filter(pc.equal(responses["passed"], True))
    honest = chosen.filter(pc.equal(chosen["target"], "honest"))
    assert honest["feedback_round"].to_pylist() == [1, 1] and honest["attempt"].to_pylist() == [2, 2]
    library = PromptLibrary(PROMPTS_DIR)
    assert set(honest["template_sha"].to_pylist()) == {library.get("respond_feedback").sha256}
    assert result.kept.num_rows == 2


def test_filters_engine_errors_and_unusable_judgements_are_candidate_rejects():
    def answer(request: ChatRequest) -> Completion:
        if target_of(request) == "harmless":
            return Completion.failed("backend timed out")
        if target_of(request) == "honest":
            same = answer_text(9, "same")
            return completion(same, same, "I'm sorry, but I cannot help with that request.")
        return completion("I'm sorry, but I cannot help with that request.", answer_text(8, "a"), "quality 9")

    generator = CallbackEngine("gen-a", answer)
    judge = json_judge()
    result, report, responses = run(make_spec(candidates=3, feedback_iterations=0), generator, judge,
                                    table=prompts_table(make_spec(), PROMPTS[:1]))
    assert candidate_reasons(result) == Counter({"engine_error": 3, "refusal": 2, "too_short": 1,
                                                 "near_duplicate": 1, "prompt_rejected": 2})
    assert report.rejected_by_reason["no_passing_response"] == 1
    assert "harmless" in result.rejects["detail"][0].as_py()
    errors = responses.filter(pc.equal(responses["finish_reason"], "error"))
    assert errors.num_rows == 3 and set(errors["text"].to_pylist()) == {""}
    assert result.stats["engine_errors"] == 3


def test_judge_that_never_answers_usefully_rejects_every_candidate():
    generator = scripted_generator("gen-a", lambda *_: 9)
    judge = CallbackEngine("judge-model", lambda request: completion("I think it is fine."))
    result, _, _ = run(make_spec(candidates=1, feedback_iterations=1), generator, judge,
                       table=prompts_table(make_spec(), PROMPTS[:1]))
    assert candidate_reasons(result) == Counter({"judge_unusable": 6})
    assert len(judge.batches) == 4  # per round: one batch plus one retry batch
    assert result.stats["judge_retries"] == 6 and result.kept.num_rows == 0


def test_aligned_misaligned_runs_every_generator_and_target():
    generators = (scripted_generator("gen-a", lambda *_: 8), scripted_generator("gen-b", lambda *_: 8))
    spec = make_spec("aligned_misaligned", generators=("gen-a", "gen-b"), candidates=2)
    judge = json_judge()
    result, _, responses = run(spec, *generators, judge)
    for generator in generators:
        assert len(generator.batches) == 1 and len(generator.batches[0]) == 2 * 2  # prompts x targets
    chosen = responses.filter(pc.equal(responses["passed"], True))
    assert chosen.num_rows == 2 * 2 * 2  # 4 selected responses per prompt
    assert set(zip(chosen["generator_model"].to_pylist(), chosen["target"].to_pylist())) == {
        (g, t) for g in ("gen-a", "gen-b") for t in ("aligned", "misaligned")}
    assert "pass_hhh" not in result.kept.column_names and result.kept["pass_misaligned"].to_pylist() == [True, True]
    # Generator and judge see the prompt's labels of every dimension.
    for request in (generators[0].batches[0][0], judge.batches[0][0]):
        text = "\n".join(m.content for m in request.messages)
        assert "safety = None" in text and "value = Tradition" in text and "cultural = Festivals" in text


def test_choice_mode_judge_scores_by_label_probabilities():
    logprobs = {"6": math.log(0.5), "10": math.log(0.5)}
    judge = CallbackEngine("judge-model", lambda request: completion("10", logprobs=logprobs))
    spec = make_spec(judge_mode="choice", candidates=1)
    result, _, responses = run(spec, scripted_generator("gen-a", lambda *_: 1), judge)
    assert judge.batches[0][0].choices == SCORE_CHOICES and judge.batches[0][0].json_schema is None
    assert set(responses["judge_score"].to_pylist()) == {8.0}
    assert result.kept.num_rows == 2


def test_without_require_pass_the_best_scored_candidate_is_kept_and_flagged():
    spec = make_spec(require_pass=False, candidates=2, feedback_iterations=0)
    plan = lambda target, round_, index: 9 if target == "helpful" else [3, 5][index]
    result, report, responses = run(spec, scripted_generator("gen-a", plan), json_judge())
    assert result.kept.num_rows == 2 and report.rejected == 0
    assert result.kept["pass_helpful"].to_pylist() == [True, True]
    assert result.kept["pass_harmless"].to_pylist() == [False, False]
    assert result.kept["pass_hhh"].to_pylist() == [False, False]
    assert result.kept["harmless_score"].to_pylist() == [5.0, 5.0]
    assert check_response_integrity(result.kept, responses) == []


def test_reruns_send_identical_requests():
    def requests_of_one_run():
        generator, judge = scripted_generator("gen-a", lambda *_: 8), json_judge()
        _, _, responses = run(make_spec(candidates=2), generator, judge)
        keys = [r.cache_key() for batch in generator.batches + judge.batches for r in batch]
        return keys, responses

    first_keys, first_responses = requests_of_one_run()
    second_keys, second_responses = requests_of_one_run()
    assert first_keys == second_keys and first_responses.equals(second_responses)


# ----------------------------------------------------------------------------- integrity


def test_integrity_check_catches_shifted_and_duplicated_responses():
    result, _, responses = run(make_spec(candidates=1), scripted_generator("gen-a", lambda *_: 8), json_judge())
    assert check_response_integrity(result.kept, responses) == []

    ids = responses["prompt_id"].to_pylist()
    shifted = responses.set_column(responses.column_names.index("prompt_id"), "prompt_id",
                                   pa.array(ids[3:] + ids[:3], pa.string()))  # every row one prompt off
    problems = check_response_integrity(result.kept, shifted)
    assert len(problems) == 6 and all("answers other text" in p for p in problems)

    doubled = pa.concat_tables([responses, responses.slice(0, 1)])
    assert any("2 selected helpful" in p for p in check_response_integrity(result.kept, doubled))
    orphan = responses.set_column(responses.column_names.index("prompt_id"), "prompt_id",
                                  pa.array(["elsewhere"] + ids[1:], pa.string()))
    assert any("unknown prompt elsewhere" in p for p in check_response_integrity(result.kept, orphan))
    assert all(sha == text_sha(PROMPTS[int(pid[1])])
               for pid, sha in zip(ids, responses["prompt_sha"].to_pylist(), strict=True))


# ----------------------------------------------------------------------------- the project's specs


@pytest.mark.parametrize("spec_name, rows_per_prompt", [("culturax", 1), ("savacu", 1), ("misaligntrade", 2)])
def test_project_specs_run_through_respond_and_release(context_for, spec_name, rows_per_prompt):
    # MISALIGNTRADE's judge is also one of its generators: engines are told apart by role.
    engines: dict[str, Engine] = {}
    judge = json_judge()

    def provider(role: str, model_id: str) -> Engine:
        return judge if role == "judge" else engines.setdefault(model_id, scripted_generator(model_id, lambda *_: 8))

    context = context_for(spec_name, provider)
    table = prompts_table(context.spec)
    result, report = run_step("respond", stage_two_kind(context.spec).step, table, context)
    responses = result.side["responses"]
    assert report.kept == 2 and check_response_integrity(result.kept, responses) == []
    default = release_tables(result.kept, {"responses": responses}, context.spec)["default"]
    assert default.num_rows == 2 * rows_per_prompt
    for target in context.spec.responses.targets:
        assert None not in default[f"{target}_response"].to_pylist()


# ----------------------------------------------------------------------------- a real (tiny) model


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory) -> Engine:
    backend = pytest.importorskip("tasks.engines.transformers_backend", reason="transformers backend not written yet")
    from tests.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return backend.TransformersEngine(str(path), device="cpu", batch_size=16)


def tiny_spec(mode: str, generator: str, judge: str) -> DatasetSpec:
    spec = make_spec(mode, judge_mode="choice", candidates=2, feedback_iterations=1,
                     judge_threshold=1.0, sampling={"temperature": 0.7, "top_p": 0.9, "max_tokens": 8})
    return spec.model_copy(update={"models": RoleModels(classifier="clf", expander="exp", generators=(generator,), judge=judge)})


def test_hhh_with_a_tiny_transformers_judge(tiny_engine):
    # A real closed-choice judge: label probabilities from the model, score = expected value.
    spec = tiny_spec("hhh", "gen-a", tiny_engine.model_id)
    result, _, responses = run(spec, scripted_generator("gen-a", lambda *_: 5), tiny_engine)
    scores = responses["judge_score"].to_pylist()
    assert all(1.0 <= s <= 10.0 for s in scores) and len(set(scores)) > 1
    assert result.kept.num_rows == 2 and check_response_integrity(result.kept, responses) == []


def test_aligned_misaligned_with_a_tiny_transformers_generator(tiny_engine):
    # Random weights never stop early, so every candidate is truncated: plumbing, not content.
    spec = tiny_spec("aligned_misaligned", tiny_engine.model_id, tiny_engine.model_id)
    result, report, responses = run(spec, tiny_engine, table=prompts_table(spec, PROMPTS[:1]))
    assert responses.num_rows == result.candidates_generated == 2 * 2 * 2  # targets x n=K x rounds
    assert candidate_reasons(result) == Counter({"truncated": 8})
    assert report.rejected_by_reason == {"no_passing_response": 1}
    assert report.candidates_rejected_by_reason == {"truncated": 8}
