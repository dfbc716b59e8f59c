"""The build plan: its bounds bracket what a build on scripted engines really asks, prices come
from the profile only, source rows are counted without loading, and calibration is cached."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from flows.build import run_build
from flows.plan import make_plan, plan_build, plan_command
from schemas.profile import EngineConfig, Profile
from tasks.stage1.classify import classify_shard
from tasks.config import PROJECT_ROOT, PROMPTS_DIR, apply_profile, load_spec, taxonomies_for
from tasks.core import Step, StepContext, concat
from tasks.dedup.near_duplicates import Fingerprinter, remove_near_duplicates, with_fingerprints
from tasks.engines.base import ChatRequest
from tasks.engines.scripted import ScriptedEngine
from tasks.stage1.expand import expand_domains
from tasks.planning.calibration import cached_throughputs, calibrate, calibration_path, machine_id
from tasks.planning.inputs import count_source_rows, sample_prompts
from tasks.planning.loads import Bounds, BuildPlan, ModelLoad
from tasks.planning.plan import estimate_build, shard_loads
from tasks.planning.render import plan_totals, render_plan, render_plan_markdown
from tasks.planning.tokens import load_token_counters
from tasks.prompts import PromptLibrary
from tasks.stage2.rate import rate_conversations
from tasks.stage2.respond import generate_responses
from tasks.stage1.sources import load_source
from tests.conftest import write_scripted_culturax
from tests.tiny_model import build_tiny_model

PRICED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SCRIPTED_PROFILE = Profile(
    name="plan-test", description="scripted engines, small targets, one priced model",
    default_engine=EngineConfig(backend="scripted"),
    models={PRICED_MODEL: EngineConfig(backend="scripted", usd_per_million_input_tokens=0.5,
                                       usd_per_million_output_tokens=2.0)},
    expansion_target=4, max_expansion_rounds=2, candidates_per_target=2, max_response_tokens=12,
    feedback_iterations=2, judge_mode="json", limit=16, shard_size=8,
)
VOCABULARY = (
    "festival harvest village elders market recipe bread music dance lantern river temple family winter spring "
    "custom story song craft weaving pottery tea rice spice garden street neighbour school ritual history colour"
).split()


# ----------------------------------------------------------------------------- scripted roles


def _draw(*parts: object) -> random.Random:
    return random.Random(hashlib.sha256(repr(parts).encode()).hexdigest())


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(count))


def classifier_answer(request: ChatRequest) -> str:
    """A label; a generation names its domain ("about X"); one first answer in five is unusable."""
    text = request.messages[-1].content
    named = [label for label in request.choices if f"about {label} " in text]
    if named:
        return named[0]
    rng = _draw(text, request.sampling.seed)
    return "I am not sure" if rng.random() < 0.2 else rng.choice(request.choices)


def expander_answer(request: ChatRequest) -> str:
    domain = request.messages[-1].content.split("Domain: ", 1)[1].split(" (", 1)[0]
    rng = _draw(request.messages[-1].content, request.sampling.seed)
    return f"Tell me about {domain} and {_words(rng, rng.randint(4, 10))}"


def generator_answer(request: ChatRequest) -> str:
    rng = _draw(request.messages[-1].content, request.sampling.seed)
    return _words(rng, rng.randint(2, 20))  # some too short, some cut at max_tokens


def judge_answer(request: ChatRequest) -> str:
    rng = _draw(request.messages[-1].content, request.sampling.seed)
    roll = rng.random()
    if roll < 0.15:
        return "hard to say"  # unusable: asked once more
    return json.dumps({"score": 8 if roll < 0.6 else 3, "critique": "name the region and give one example"})


ANSWERS: dict[str, Callable[[ChatRequest], str]] = {
    "classifier": classifier_answer, "expander": expander_answer, "generator": generator_answer,
    "judge": judge_answer, "rater": lambda request: _draw(request.messages[-1].content).choice(["Yes", "No", "maybe"]),
}


@dataclass
class ScriptedBuild:
    """The build's pure steps in its order, on one scripted engine per (role, model)."""

    context: StepContext
    engines: dict[tuple[str, str], ScriptedEngine]

    @classmethod
    def start(cls, dataset: str, profile: Profile = SCRIPTED_PROFILE) -> ScriptedBuild:
        spec = apply_profile(load_spec(dataset), profile)
        engines: dict[tuple[str, str], ScriptedEngine] = {}

        def provider(role: str, model: str) -> ScriptedEngine:
            return engines.setdefault((role, model), ScriptedEngine(ANSWERS[role], model))

        context = StepContext(spec=spec, profile=profile, taxonomies=taxonomies_for(spec),
                              prompts=PromptLibrary(PROMPTS_DIR), engines=provider, logger=logging.getLogger("test"))
        return cls(context, engines)

    def usage(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {key: (e.usage.requests, e.usage.prompt_tokens, e.usage.completion_tokens)
                for key, e in self.engines.items()}

    def shards(self, table: pa.Table) -> list[pa.Table]:
        size = self.context.spec.shard_size
        return [table.slice(offset, size) for offset in range(0, table.num_rows, size)]

    def map(self, step: Step, table: pa.Table) -> pa.Table:
        return concat([step(shard, self.context).kept for shard in self.shards(table)], schema=table.schema)


def used_between(before: dict, after: dict) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {key: tuple(a - b for a, b in zip(value, before.get(key, (0, 0, 0)))) for key, value in after.items()}


def assert_brackets(loads: list[ModelLoad], stage: str, actual: dict[tuple[str, str], tuple[int, int, int]]) -> None:
    """Every load of `stage` brackets what its (role, model) did; nothing ran without a load."""
    planned = {(load.role, load.spec_model): load for load in loads if load.stage == stage}
    assert {key for key, used in actual.items() if any(used)} <= set(planned), (stage, actual)
    for key, load in planned.items():
        requests, input_tokens, output_tokens = actual.get(key, (0, 0, 0))
        for name, bounds, value in (("requests", load.requests, requests), ("input", load.input_tokens, input_tokens),
                                    ("output", load.output_tokens, output_tokens)):
            assert bounds.lower <= value <= bounds.upper, (stage, key, name, bounds, value)


# ----------------------------------------------------------------------------- brackets


def test_plan_brackets_a_scripted_build_stage_by_stage() -> None:
    dataset = "misaligntrade"  # four dimensions, two generators, a judge: every bound has work to do
    build = ScriptedBuild.start(dataset)
    spec = build.context.spec
    source = load_source(spec, PROJECT_ROOT, real=False, limit=SCRIPTED_PROFILE.limit)

    prompts = build.map(classify_shard, source.prompts)
    after_classify = build.usage()
    fingerprinter = Fingerprinter.fit(prompts["text"].to_pylist(), spec.dedup)
    prompts = remove_near_duplicates(with_fingerprints(prompts, fingerprinter), spec.dedup, spec.seed).kept
    expansion = expand_domains(prompts, replace(build.context, fingerprinter=fingerprinter))
    after_expand = build.usage()
    assert expansion.stats["generated"] > 0 and expansion.stats["accepted"] > 0
    respond_shards = build.shards(expansion.kept)
    respond_usage = []
    for shard in respond_shards:
        before = build.usage()
        generate_responses(shard, build.context)
        respond_usage.append(used_between(before, build.usage()))

    rows = count_source_rows(spec, real=False)
    sample = sample_prompts(spec, real=False, limit=SCRIPTED_PROFILE.limit)
    plan = estimate_build(load_spec(dataset), SCRIPTED_PROFILE, rows.rows, sample.texts,
                          prompts_per_row=sample.prompts_per_row)

    assert plan.prompts == source.prompts.num_rows == 16
    assert_brackets(list(plan.loads), "classify", after_classify)
    assert_brackets(list(plan.loads), "expand", used_between(after_classify, after_expand))
    assert_brackets(list(plan.loads), "respond", used_between(after_expand, build.usage()))
    # Given the prompts that reached Stage II, each shard's estimate brackets that shard.
    for shard, used in zip(respond_shards, respond_usage, strict=True):
        assert_brackets(shard_loads("respond", shard, spec, SCRIPTED_PROFILE), "respond", used)
    # Classification's lower bound is exact: one first attempt per prompt and dimension.
    classify_load = next(load for load in plan.loads if load.stage == "classify")
    first_attempts = 16 * len(spec.dimensions)
    assert classify_load.requests == Bounds(first_attempts, 2 * first_attempts)
    assert after_classify[("classifier", spec.models.classifier)][0] > first_attempts  # retries happened


def test_plan_brackets_each_models_usage_in_a_real_scripted_build(tmp_path) -> None:
    files = write_scripted_culturax(tmp_path)
    result = run_build(str(files["spec"]), str(files["profile"]), home=str(tmp_path / "home"))
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    used = {use["engine"]: (use["requests"], use["prompt_tokens"], use["completion_tokens"]) for use in manifest["models"]}

    plan = make_plan(str(files["spec"]), str(files["profile"]), home=tmp_path / "home")
    assert plan.prompts == 60
    totals = plan.by_model()
    assert {f"{engine}@unpinned" for _, engine in totals} == set(used)
    for (model, engine), total in totals.items():
        requests, input_tokens, output_tokens = used[f"{engine}@unpinned"]
        for name, bounds, value in (("requests", total.requests, requests), ("input", total.input_tokens, input_tokens),
                                    ("output", total.output_tokens, output_tokens)):
            assert bounds.lower <= value <= bounds.upper, (model, name, bounds, value)


def test_rater_plan_brackets_scripted_raters() -> None:
    build = ScriptedBuild.start("demo_safetybench")
    spec = build.context.spec
    source = load_source(spec, PROJECT_ROOT, real=False, limit=SCRIPTED_PROFILE.limit)
    prompts = build.map(classify_shard, source.prompts)
    before = build.usage()
    for shard in build.shards(prompts):
        rate_conversations(shard, build.context)
    used = used_between(before, build.usage())
    assert_brackets(shard_loads("rate", prompts, spec, SCRIPTED_PROFILE), "rate", used)
    assert {role for (role, _), work in used.items() if any(work)} == {"rater"}


# ----------------------------------------------------------------------------- money and time


def small_plan(profile: Profile, **options) -> BuildPlan:
    spec = load_spec("culturax")
    sample = sample_prompts(spec, real=False, limit=8)
    return estimate_build(spec, profile, 140, sample.texts, limit=8, **options)


def test_prices_come_from_the_profile_only() -> None:
    unpriced = small_plan(SCRIPTED_PROFILE.model_copy(update={"models": {}}))
    assert all(load.cost_usd is None for load in unpriced.loads)
    assert unpriced.total().cost_usd is None and plan_totals(unpriced)["cost_usd"] is None
    assert "n/a" in render_plan_markdown(unpriced)

    priced = small_plan(SCRIPTED_PROFILE)
    for load in priced.loads:
        if load.spec_model != PRICED_MODEL:
            assert load.cost_usd is None
            continue
        assert load.cost_usd.upper == pytest.approx(
            (load.input_tokens.upper * 0.5 + load.output_tokens.upper * 2.0) / 1e6)
        assert load.cost_usd.lower == pytest.approx(
            (load.input_tokens.lower * 0.5 + load.output_tokens.lower * 2.0) / 1e6)
    total = priced.total()
    assert total.cost_usd.upper == pytest.approx(sum(l.cost_usd.upper for l in priced.loads if l.cost_usd))
    assert total.unpriced == ("scripted:mistralai/Mistral-7B-Instruct-v0.3",)


def test_time_from_profile_throughput_then_calibration() -> None:
    untimed = small_plan(SCRIPTED_PROFILE)
    assert all(load.seconds is None for load in untimed.loads)

    label = "scripted:meta-llama/Llama-3.1-8B-Instruct"
    measured = small_plan(SCRIPTED_PROFILE, throughputs={label: 20.0})
    for load in measured.loads:
        if load.engine == label:
            assert load.seconds.upper == pytest.approx(load.output_tokens.upper / 20 + load.input_tokens.upper / 200)
        else:
            assert load.seconds is None

    # A throughput in the profile wins over a measured one.
    fast = SCRIPTED_PROFILE.model_copy(update={"models": {PRICED_MODEL: EngineConfig(
        backend="scripted", output_tokens_per_second=1000.0)}})
    profiled = small_plan(fast, throughputs={label: 20.0})
    load = next(load for load in profiled.loads if load.engine == label)
    assert load.seconds.upper == pytest.approx(load.output_tokens.upper / 1000 + load.input_tokens.upper / 10000)


def test_calibration_is_measured_once_and_cached_per_machine(tmp_path) -> None:
    def slow_answer(request: ChatRequest) -> str:
        time.sleep(0.005)
        return "one two three four five six seven eight"

    rate = calibrate(ScriptedEngine(slow_answer, "model-a"), n_requests=4, max_tokens=32, home=tmp_path)
    assert 0 < rate < 8 * 4 / 0.02  # eight tokens per request, at least 5 ms each
    stored = json.loads(calibration_path(tmp_path).read_text())
    assert stored[machine_id()]["scripted:model-a"]["output_tokens_per_second"] == rate
    calibrate(ScriptedEngine(slow_answer, "model-b"), home=tmp_path)
    cached = cached_throughputs(tmp_path)
    assert set(cached) == {"scripted:model-a", "scripted:model-b"} and cached["scripted:model-a"] == rate
    assert cached_throughputs(tmp_path / "elsewhere") == {}


def test_calibration_fails_loudly_when_nothing_is_generated(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="no tokens"):
        calibrate(ScriptedEngine({}, "silent"), home=tmp_path)
    assert not calibration_path(tmp_path).exists()


# ----------------------------------------------------------------------------- inputs


def test_source_rows_are_counted_like_the_loader_reads_them(tmp_path, monkeypatch) -> None:
    for dataset in ("culturax", "demo_safetybench"):  # jsonl; csv with rows per rater
        spec = load_spec(dataset)
        assert count_source_rows(spec, real=False).rows == load_source(spec, PROJECT_ROOT, real=False).rows_read

    spec = load_spec("culturax")
    table = pa.table({"Question": ["a b c"] * 7})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "sample.parquet")
    parquet_spec = spec.model_copy(update={"source": spec.source.model_copy(
        update={"sample": "data/sample.parquet", "format": "parquet"})})
    assert count_source_rows(parquet_spec, real=False, project_root=tmp_path).rows == 7

    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    unknown = count_source_rows(spec, real=True)
    assert unknown.rows is None and "unknown" in unknown.how
    info = tmp_path / "hf" / "SoftMINER-Group___cultural_kaleidoscope" / "default" / "0.0.0" / "abc"
    info.mkdir(parents=True)
    (info / "dataset_info.json").write_text(json.dumps({"splits": {"train": {"num_examples": 1234}}}))
    assert count_source_rows(spec, real=True).rows == 1234


def test_unknown_source_size_plans_the_limit_or_nothing() -> None:
    spec = load_spec("culturax")
    texts = sample_prompts(spec, real=False, limit=None).texts
    nothing = estimate_build(spec, SCRIPTED_PROFILE.model_copy(update={"limit": None}), None, texts)
    assert nothing.loads == () and nothing.prompts is None
    assert any("--limit" in note for note in nothing.notes)
    limited = estimate_build(spec, SCRIPTED_PROFILE, None, texts, limit=500)
    assert limited.prompts == 500
    assert next(load for load in limited.loads if load.stage == "classify").requests == Bounds(500, 1000)


def test_grouped_source_plans_prompts_not_rater_rows() -> None:
    spec = load_spec("demo_safetybench")
    sample = sample_prompts(spec, real=False, limit=None)
    rows = count_source_rows(spec, real=False).rows
    plan = estimate_build(spec, SCRIPTED_PROFILE.model_copy(update={"limit": None}), rows, sample.texts,
                          prompts_per_row=sample.prompts_per_row)
    assert plan.prompts == load_source(spec, PROJECT_ROOT, real=False).prompts.num_rows < rows


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> Profile:
    model = build_tiny_model(tmp_path_factory.mktemp("plan") / "tiny-model")
    return Profile(name="tiny", description="tiny local model",
                   default_engine=EngineConfig(backend="transformers", model=str(model)),
                   models={"meta-llama/Llama-3.1-8B-Instruct": EngineConfig(backend="vllm", model="no-such/model")})


def test_tokens_are_counted_by_the_models_tokenizer_when_it_loads_offline(tiny_profile) -> None:
    from transformers import AutoTokenizer

    spec = load_spec("culturax")
    counters = load_token_counters(spec, tiny_profile)
    assert set(counters) == {"mistralai/Mistral-7B-Instruct-v0.3"}  # the other model is not on this machine
    tokenizer = AutoTokenizer.from_pretrained(tiny_profile.default_engine.model)
    text = "How is kimchi prepared for the winter?"
    assert counters["mistralai/Mistral-7B-Instruct-v0.3"](text) == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    plan = estimate_build(spec, tiny_profile, 20, [text], counters)
    assert plan.token_counting == {"mistralai/Mistral-7B-Instruct-v0.3": "tokenizer",
                                   "meta-llama/Llama-3.1-8B-Instruct": "approximation: characters / 4"}


# ----------------------------------------------------------------------------- rendering and entry points


def test_renderings_show_every_load_and_the_totals() -> None:
    plan = small_plan(SCRIPTED_PROFILE)
    markdown = render_plan_markdown(plan)
    assert markdown.count("\n| classify / classifier |") == 1 and "| total | all models |" in markdown
    assert all(load.assumption in markdown for load in plan.loads)
    table = render_plan(plan)
    assert table.row_count == len(plan.loads) + len(plan.by_model()) + 1


def test_plan_command_and_flow_function_plan_the_local_build(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ALIGNFORGE_HOME", str(tmp_path))
    app = typer.Typer()
    app.command()(plan_command)
    result = CliRunner().invoke(app, ["culturax", "--limit", "5"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "classify" in result.output and "5 prompts" in result.output

    summary = plan_build.fn("culturax", "local", 5)
    assert summary["prompts"] == 5 and summary["requests"][0] == 5
    assert summary["cost_usd"] is None and "| classify / classifier |" in summary["markdown"]
