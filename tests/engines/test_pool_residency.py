"""GPU residency in the engine pool: the models loaded together never reserve more than the
profile's gpu_memory_budget, for the role sets of all four specs on the paper profile, with
the real steps driving the pool from two threads as the build's task runner does.

A stand-in replaces vLLM: it reserves its gpu_memory_utilization on a recorded GPU when it
starts (refusing, as vLLM does, when the free memory is short of its share), frees it on
close, and refuses a batch once closed.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pytest

from schemas.profile import EngineConfig, Profile
from tasks.config import PROJECT_ROOT, PROMPTS_DIR, apply_profile, load_profile, load_spec, taxonomies_for
from tasks.core import StepContext
from tasks.dedup.near_duplicates import Fingerprinter, remove_near_duplicates, with_fingerprints
from tasks.engines import openai_http, vllm_backend
from tasks.engines.base import ChatRequest, Choice, Completion, Engine
from tasks.engines.pool import EnginePool
from tasks.prompts import PromptLibrary
from tasks.stage1.classify import classify_shard
from tasks.stage1.expand import expand_domains
from tasks.stage1.sources import load_source
from tasks.stage2.rate import rate_conversations
from tasks.stage2.respond import generate_responses
from tests.engines.helpers import ask

SPECS = ("culturax", "savacu", "misaligntrade", "demo_safetybench")
# The paper profile's engines, with the build scaled down to seconds.
SMALL = {"expansion_target": 2, "max_expansion_rounds": 1, "candidates_per_target": 1, "feedback_iterations": 1,
         "max_response_tokens": 16, "limit": 16, "shard_size": 8}


@dataclass
class RecordedGPU:
    """Who holds GPU memory now, and the most ever held at once."""

    budget: float
    held: dict[int, tuple[str, float]] = field(default_factory=dict)
    peak: float = 0.0
    loads: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reserve(self, engine: Engine, share: float) -> None:
        with self.lock:
            in_use = sum(s for _, s in self.held.values())
            if in_use + share > self.budget + 1e-9:
                raise ValueError(f"free memory is less than desired GPU memory utilization ({share}); "
                                 f"held: {sorted(self.held.values())}")
            self.held[id(engine)] = (engine.model_id, share)
            self.peak = max(self.peak, in_use + share)
            self.loads.append(engine.model_id)

    def free(self, engine: Engine) -> None:
        with self.lock:
            del self.held[id(engine)]


def scripted_answer(request: ChatRequest) -> str:
    """Any role's answer, told apart by the request: a closed choice, a judge's JSON, an
    expansion prompt, or a response."""
    text = request.messages[-1].content
    rng = random.Random(f"{text}|{request.sampling.seed}")
    if request.choices:
        named = [label for label in request.choices if f"about {label} " in text]
        return named[0] if named else rng.choice(request.choices)
    if request.json_schema is not None:
        return json.dumps({"score": rng.choice([3, 8]), "critique": "give one example"})
    if text.startswith("Domain: "):
        return f"Tell me about {text.split('Domain: ', 1)[1].split(' (', 1)[0]} and {rng.random()} things"
    return " ".join(rng.choice(["festival", "harvest", "market", "river", "song"]) for _ in range(rng.randint(3, 12)))


class StandInVLLM(Engine):
    """vLLM's resource behaviour without vLLM: a share of the recorded GPU from start to close."""

    backend = "vllm"
    gpu: RecordedGPU

    def __init__(self, model_id: str, revision: str | None = None, *, gpu_memory_utilization: float,
                 **engine_options: object) -> None:
        super().__init__(model_id, revision)
        self.gpu.reserve(self, gpu_memory_utilization)
        self.closed = False
        self.running = 0

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if self.closed:
            raise RuntimeError(f"{self.model_id}: a batch reached a closed engine")
        self.running += 1
        time.sleep(0.002)  # let the other shard's thread move meanwhile
        completions = [Completion(choices=(Choice(scripted_answer(r), "stop", 3),) * r.sampling.n, prompt_tokens=9,
                                  latency_s=0.0) for r in requests]
        self.running -= 1
        self.usage.record(completions, 0.0)
        return completions

    def close(self) -> None:
        if self.closed:
            return
        if self.running:
            raise RuntimeError(f"{self.model_id}: closed while a batch was running on it")
        self.closed = True
        self.gpu.free(self)


class StandInAPI(StandInVLLM):
    """GPT-4o through the API: no GPU memory, no network."""

    backend = "openai"

    def __init__(self, model_id: str, revision: str | None = None, **client_options: object) -> None:
        Engine.__init__(self, model_id, revision)
        self.closed, self.running = False, 0

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def recorded_gpu(monkeypatch: pytest.MonkeyPatch) -> RecordedGPU:
    gpu = RecordedGPU(budget=1.0)  # the stand-in refuses like vLLM at a full GPU; the pool's budget is lower
    monkeypatch.setattr(StandInVLLM, "gpu", gpu, raising=False)
    monkeypatch.setattr(vllm_backend, "VLLMEngine", StandInVLLM)
    monkeypatch.setattr(openai_http, "OpenAIEngine", StandInAPI)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    return gpu


def build_stages(dataset: str, profile: Profile) -> EnginePool:
    """Classification, expansion and Stage II of one spec on `profile`'s engines, the shard
    stages on two threads (the build's task runner); returns the pool."""
    spec = apply_profile(load_spec(dataset), profile)
    pool = EnginePool(profile, cache_path=None)
    context = StepContext(spec=spec, profile=profile, taxonomies=taxonomies_for(spec),
                          prompts=PromptLibrary(PROMPTS_DIR), engines=pool)

    def shards(table: pa.Table) -> list[pa.Table]:
        return [table.slice(start, spec.shard_size) for start in range(0, table.num_rows, spec.shard_size)]

    def on_two_threads(step, table: pa.Table) -> pa.Table:  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(max_workers=2) as runner:
            kept = list(runner.map(lambda shard: step(shard, context).kept, shards(table)))
        pool.release()  # the build's end of a GPU stage
        return pa.concat_tables(kept)

    source = load_source(spec, PROJECT_ROOT, real=False, limit=profile.limit)
    prompts = on_two_threads(classify_shard, source.prompts)
    context.fingerprinter = Fingerprinter.fit(prompts["text"].to_pylist(), spec.dedup)
    prompts = remove_near_duplicates(with_fingerprints(prompts, context.fingerprinter), spec.dedup, spec.seed).kept
    expanded = expand_domains(prompts, context).kept
    pool.release()
    stage_two = rate_conversations if spec.responses.mode == "raters" else generate_responses
    on_two_threads(stage_two, expanded)
    return pool


@pytest.mark.parametrize("dataset", SPECS)
def test_resident_models_never_pass_the_budget_on_the_paper_profile(dataset: str, recorded_gpu: RecordedGPU) -> None:
    paper = load_profile("paper").model_copy(update=SMALL)
    pool = build_stages(dataset, paper)
    assert 0 < recorded_gpu.peak <= paper.gpu_memory_budget
    assert recorded_gpu.held == {} and pool.resident() == []
    spec = load_spec(dataset)
    gpu_models = {m for m in (spec.models.classifier, spec.models.expander, *spec.models.generators,
                              spec.models.judge, *spec.models.raters) if m and m != "gpt-4o"}
    assert set(recorded_gpu.loads) == gpu_models  # every GPU model of the spec was loaded, and only those


def test_models_whose_shares_fit_together_stay_resident(recorded_gpu: RecordedGPU) -> None:
    paper = load_profile("paper")
    shared = paper.model_copy(update=SMALL | {"default_engine": paper.default_engine.model_copy(
        update={"gpu_memory_utilization": 0.3})})
    build_stages("misaligntrade", shared)
    # Both models of each stage fit the 0.95 budget together: each loads once per stage that uses
    # it (classify: the classifier; expand: expander, classifier; respond: two generators, one the judge).
    assert len(recorded_gpu.loads) == 5 and recorded_gpu.peak == pytest.approx(0.6)
    recorded_gpu.loads.clear()
    build_stages("misaligntrade", paper.model_copy(update=SMALL))
    assert len(recorded_gpu.loads) > 5  # at 0.88 each, the phases of a stage take turns on the GPU


def test_the_least_recently_used_idle_model_leaves_first(recorded_gpu: RecordedGPU) -> None:
    engine = EngineConfig(backend="vllm", gpu_memory_utilization=0.3)
    pool = EnginePool(Profile(name="three", description="", default_engine=engine, gpu_memory_budget=0.65),
                      cache_path=None)
    a, b, c = (pool("generator", name) for name in ("a", "b", "c"))
    for handle in (a, b, a, c):
        handle.generate([ask("x")])
    assert sorted(pool.resident()) == ["vllm:a", "vllm:c"]  # b was used longest ago
    assert [u.requests for u in (a.usage, b.usage, c.usage)] == [2, 1, 1]  # b's usage outlives its engine


def test_a_model_busy_on_another_thread_is_waited_for_not_closed(recorded_gpu: RecordedGPU) -> None:
    engine = EngineConfig(backend="vllm", gpu_memory_utilization=0.88)
    pool = EnginePool(Profile(name="two", description="", default_engine=engine), cache_path=None)
    slow, other = pool("generator", "slow"), pool("judge", "other")
    started = threading.Event()
    original = StandInVLLM.generate

    def slow_generate(self: StandInVLLM, requests: Sequence[ChatRequest]) -> list[Completion]:
        if self.model_id == "slow":
            started.set()
            time.sleep(0.2)
        return original(self, requests)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StandInVLLM, "generate", slow_generate)
        with ThreadPoolExecutor(max_workers=1) as runner:
            first = runner.submit(slow.generate, [ask("x")])
            started.wait()
            [answer] = other.generate([ask("y")])  # must wait for "slow" to finish, then replace it
        assert first.result()[0].ok and answer.ok
    assert recorded_gpu.loads == ["slow", "other"] and pool.resident() == ["vllm:other"]


def test_a_share_above_the_budget_is_refused_when_asked_for(recorded_gpu: RecordedGPU) -> None:
    profile = Profile(name="big", description="", gpu_memory_budget=0.8,
                      default_engine=EngineConfig(backend="vllm", gpu_memory_utilization=0.9))
    with pytest.raises(ValueError, match="gpu_memory_budget 0.8"):
        EnginePool(profile, cache_path=None)("classifier", "m")


def test_models_off_the_gpu_load_at_once_and_are_never_displaced(recorded_gpu: RecordedGPU) -> None:
    profile = Profile(name="mixed", description="", default_engine=EngineConfig(backend="vllm", gpu_memory_utilization=0.9),
                      models={"rater": EngineConfig(backend="scripted", scripted_answers={"": "Yes"})})
    pool = EnginePool(profile, cache_path=None)
    rater = pool("rater", "rater")
    assert pool.resident() == ["scripted:rater"] and recorded_gpu.loads == []
    for name in ("a", "b"):
        pool("generator", name).generate([ask("x")])
    assert rater.generate([ask("x")])[0].text == "Yes"
    assert sorted(pool.resident()) == ["scripted:rater", "vllm:b"]
