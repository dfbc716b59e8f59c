"""The contract every backend keeps, run against each backend available here.

transformers runs the tiny local model; openai runs the HTTP client against our real
OpenAI-compatible server serving that model; scripted runs a deterministic stand-in; vllm
runs where vLLM is installed (a `vllm` marker, skipped otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.engines.base import ChatRequest, Choice, Completion, Engine
from tasks.engines.choice_scoring import normalise_over_choices
from tests.engines.helpers import ask

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def stand_in_model(request: ChatRequest) -> str | Completion:
    """What the scripted backend answers in the contract: a model-shaped answer for each kind of request."""
    if request.choices is not None:
        distribution = normalise_over_choices({label: -float(rank) for rank, label in enumerate(request.choices)})
        choice = Choice(text=request.choices[0], finish_reason="stop", completion_tokens=1,
                        choice_logprobs=distribution)
        return Completion(choices=(choice,) * request.sampling.n, prompt_tokens=1, latency_s=0.0)
    if request.json_schema is not None:
        return '{"label": "safe"}'
    return " ".join(f"w{(request.sampling.seed or 0) + k}" for k in range(100))


@pytest.fixture(scope="module", params=["transformers", "openai", "scripted",
                                        pytest.param("vllm", marks=pytest.mark.vllm)])
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Engine]:
    backend = request.param
    if backend == "transformers":
        yield request.getfixturevalue("tiny_engine")
    elif backend == "openai":
        from tasks.engines.openai_http import OpenAIEngine
        from tests.engines.openai_server import running_server

        with running_server(request.getfixturevalue("tiny_engine"), served_model_name="tiny") as base_url:
            yield OpenAIEngine("tiny", base_url=base_url, timeout_s=30, max_retries=1)
    elif backend == "scripted":
        from tasks.engines.scripted import ScriptedEngine

        yield ScriptedEngine(stand_in_model)
    else:
        yield request.getfixturevalue("vllm_engine")  # the session's engine: one vLLM start for all tests


def test_answers_come_back_in_request_order(engine: Engine) -> None:
    requests = []
    for i in range(6):
        requests.append(ask(f"classify item {i}", choices=(f"label{i}a", f"label{i}b")))
        requests.append(ask(f"write about item {i}", sampling={"max_tokens": 2 + i}))
    completions = engine.generate(requests)
    assert len(completions) == len(requests)
    for request, completion in zip(requests, completions, strict=True):
        assert completion.ok, completion.error
        if request.choices is not None:
            assert completion.text in request.choices
        else:
            assert 1 <= completion.choices[0].completion_tokens <= request.sampling.max_tokens


def test_n_samples(engine: Engine) -> None:
    sampled, greedy = engine.generate([
        ask("tell a story", sampling={"n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 6}),
        ask("tell a story", sampling={"n": 2, "max_tokens": 6}),
    ])
    assert len(sampled.choices) == 3
    assert len(greedy.choices) == 2
    assert greedy.choices[0].text == greedy.choices[1].text  # temperature 0: one answer, n times


def test_closed_choice_stays_in_the_set_with_a_distribution(engine: Engine) -> None:
    labels = ("safe", "unsafe", "needs review")
    [completion] = engine.generate([ask("Is this request harmful?", choices=labels)])
    assert completion.ok, completion.error
    choice = completion.choices[0]
    assert choice.text in labels
    assert choice.choice_logprobs is not None
    assert set(choice.choice_logprobs) == set(labels)
    assert math.isclose(sum(math.exp(v) for v in choice.choice_logprobs.values()), 1.0, abs_tol=1e-4)
    assert choice.text == max(choice.choice_logprobs, key=choice.choice_logprobs.__getitem__)


def test_max_tokens_cuts_with_finish_length(engine: Engine) -> None:
    [completion] = engine.generate([ask("write a long essay", sampling={"max_tokens": 4})])
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].completion_tokens == 4


def test_same_seed_same_samples(engine: Engine) -> None:
    request = ask("surprise me", sampling={"temperature": 1.0, "seed": 1234, "n": 2, "max_tokens": 8})
    first, second = engine.generate([request]), engine.generate([request])
    assert [c.text for c in first[0].choices] == [c.text for c in second[0].choices]


def test_json_schema_request_returns_text(engine: Engine) -> None:
    [completion] = engine.generate([ask("Answer in JSON", json_schema=SCHEMA, sampling={"max_tokens": 12})])
    assert completion.ok, completion.error
    assert completion.text.lstrip().startswith("{")


def test_usage_counts_requests_and_tokens(engine: Engine) -> None:
    before = engine.usage.requests
    engine.generate([ask("count me", sampling={"max_tokens": 3})])
    assert engine.usage.requests == before + 1
    assert engine.usage.completion_tokens > 0
