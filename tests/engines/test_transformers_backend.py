"""Transformers backend details beyond the contract: exact choice scores, limits, batching,
chat templates that refuse a system turn, and requests that fail alone."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from jinja2 import TemplateError

from tasks.engines.base import PROMPT_TOO_LONG, TEMPLATE_ERROR, ChatRequest, Message, SamplingParams
from tasks.engines.chat_template import chat_prompt
from tasks.engines.choice_scoring import label_continuation, normalise_over_choices
from tasks.engines.transformers_backend import TransformersEngine
from tests.engines.helpers import ask


def full_sequence_scores(engine: TransformersEngine, request) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Reference: each (prompt, label) pair scored alone in one unpadded forward pass."""
    import torch

    prompt = chat_prompt(engine.tokenizer, request.messages)
    prompt_ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = {}
    for label in request.choices:
        ids = prompt_ids + label_continuation(engine.tokenizer, label)
        with torch.inference_mode():
            logprobs = engine.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        scores[label] = sum(logprobs[k - 1, ids[k]].item() for k in range(len(prompt_ids), len(ids)))
    return normalise_over_choices(scores)


def test_shared_prompt_cache_scores_equal_full_sequence_scores(tiny_engine: TransformersEngine) -> None:
    # Prompts of different lengths (left padding) and label sets of different sizes and lengths.
    requests = [ask("short", choices=("safe", "unsafe")),
                ask("a much longer prompt " * 6, choices=("yes", "no", "needs human review")),
                ask("medium length prompt here", choices=("A", "B", "C", "D"))]
    for request, completion in zip(requests, tiny_engine.generate(requests), strict=True):
        expected = full_sequence_scores(tiny_engine, request)
        got = completion.choices[0].choice_logprobs
        assert got is not None
        assert all(math.isclose(got[label], expected[label], abs_tol=1e-4) for label in request.choices)


def test_sampled_choices_follow_the_seed(tiny_engine: TransformersEngine) -> None:
    request = ask("pick", choices=("a", "b", "c"), sampling={"temperature": 2.0, "n": 20, "seed": 3})
    first, second = tiny_engine.generate([request]), tiny_engine.generate([request])
    assert [c.text for c in first[0].choices] == [c.text for c in second[0].choices]
    assert {c.text for c in first[0].choices} <= {"a", "b", "c"}


def test_json_requests_are_prefilled_with_a_brace(tiny_engine: TransformersEngine) -> None:
    [completion] = tiny_engine.generate([ask("json", json_schema={"type": "object"}, sampling={"max_tokens": 3})])
    assert completion.text.startswith("{")
    assert completion.choices[0].completion_tokens == 3  # the prefilled brace is prompt, not answer


def test_too_long_requests_fail_alone(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    engine = TransformersEngine(str(tiny_model_dir), device="cpu", max_model_len=40)
    long_prompt, short_prompt = ask("word " * 60), ask("hi", sampling={"max_tokens": 4})
    failed, fine, failed_choice = engine.generate([long_prompt, short_prompt, ask("word " * 60, choices=("a", "b"))])
    assert failed.error is not None and "at most 40" in failed.error
    assert failed_choice.error is not None
    assert fine.ok and fine.choices[0].completion_tokens == 4


def test_empty_choice_set_is_an_error(tiny_engine: TransformersEngine) -> None:
    [completion] = tiny_engine.generate([ask("pick", choices=())])
    assert completion.error is not None and "at least one choice" in completion.error


def test_batches_larger_than_batch_size_are_chunked(tiny_engine: TransformersEngine) -> None:
    requests = [ask("word " * i, sampling={"max_tokens": 2}) for i in range(9)]  # batch_size is 4
    completions = tiny_engine.generate(requests)
    assert len(completions) == 9 and all(c.ok for c in completions)
    own_lengths = [len(tiny_engine.tokenizer(chat_prompt(tiny_engine.tokenizer, r.messages),
                                             add_special_tokens=False)["input_ids"]) for r in requests]
    assert [c.prompt_tokens for c in completions] == own_lengths  # padding is never counted


def test_seeding_leaves_the_callers_random_state_alone(tiny_engine: TransformersEngine) -> None:
    import torch

    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    tiny_engine.generate([ask("x", sampling={"temperature": 1.0, "seed": 99, "max_tokens": 2})])
    assert torch.equal(torch.rand(1), expected)


def test_unknown_packaged_model_is_named() -> None:
    with pytest.raises(ValueError, match="packaged:smollm2"):
        TransformersEngine("packaged:gpt5")


def test_threads_take_turns_and_keep_seeded_results(tiny_engine: TransformersEngine) -> None:
    request = ask("x", sampling={"temperature": 1.0, "seed": 5, "max_tokens": 5})
    expected = tiny_engine.generate([request])[0].text
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda _: tiny_engine.generate([request])[0].text, range(8)))
    assert texts == [expected] * 8


SYSTEM_AND_USER = ChatRequest(messages=(Message(role="system", content="You label prompts."),
                                        Message(role="user", content="Is this safe?")),
                              sampling=SamplingParams(max_tokens=2))


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(tiny_gemma_dir) -> None:  # type: ignore[no-untyped-def]
    engine = TransformersEngine(str(tiny_gemma_dir), device="cpu")
    with pytest.raises(TemplateError, match="System role not supported"):
        chat_prompt(engine.tokenizer, SYSTEM_AND_USER.messages)  # the template really refuses it
    folded = chat_prompt(engine.tokenizer, (Message(role="user", content="You label prompts.\n\nIs this safe?"),))
    open_answer, scored = engine.generate([SYSTEM_AND_USER, SYSTEM_AND_USER.model_copy(update={"choices": ("a", "b")})])
    expected_tokens = len(engine.tokenizer(folded, add_special_tokens=False)["input_ids"])
    assert open_answer.ok and scored.ok
    assert open_answer.prompt_tokens == scored.prompt_tokens == expected_tokens


def test_a_template_error_or_a_too_long_prompt_fails_alone_with_its_reason(tiny_gemma_dir) -> None:  # type: ignore[no-untyped-def]
    engine = TransformersEngine(str(tiny_gemma_dir), device="cpu", max_model_len=40)
    not_alternating = ChatRequest(messages=(Message(role="user", content="one"), Message(role="user", content="two")))
    batch = [ask("hi", sampling={"max_tokens": 2}), not_alternating, ask("word " * 60),
             ask("pick", choices=("a", "b")), not_alternating.model_copy(update={"choices": ("a", "b")}),
             ask("word " * 60, choices=("a", "b"))]
    fine, template, too_long, fine_choice, template_choice, too_long_choice = engine.generate(batch)
    assert fine.ok and fine_choice.ok
    assert template.reason == template_choice.reason == TEMPLATE_ERROR
    assert "alternate" in (template.error or "")
    assert too_long.reason == too_long_choice.reason == PROMPT_TOO_LONG
    assert "at most 40" in (too_long.error or "")
