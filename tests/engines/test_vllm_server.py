"""The HTTP client against vLLM's own OpenAI server on the tiny Gemma-style model: a system
turn the template refuses is folded, and label probabilities are read from token logprobs
correctly for labels that share their first tokens."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from tasks.engines.base import ChatRequest, Message
from tasks.engines.openai_http import OpenAIEngine, choice_logprobs_of
from tests.engines.conftest import SERVED_NAME
from tests.engines.helpers import ask

pytestmark = pytest.mark.vllm

# Three labels share "The" and go on differently; the tiny model spells them in several tokenizations.
LABELS = ("The model", "The assistant", "The dataset", "A user", "safe")


def client(base_url: str) -> OpenAIEngine:
    return OpenAIEngine(SERVED_NAME, base_url=base_url, timeout_s=60, max_retries=1)


def test_a_system_turn_the_template_refuses_is_folded(vllm_server: str) -> None:
    request = ChatRequest(messages=(Message(role="system", content="You label prompts."),
                                    Message(role="user", content="Is this safe?")))
    refused = httpx.post(f"{vllm_server}/chat/completions", timeout=60, json={
        "model": SERVED_NAME, "messages": [m.model_dump() for m in request.messages], "max_tokens": 2})
    assert refused.status_code == 400 and "System role not supported" in refused.text
    engine = client(vllm_server)
    [completion] = engine.generate([request.model_copy(update={"sampling": request.sampling.model_copy(
        update={"max_tokens": 2})})])
    assert completion.ok, completion.error
    assert engine.fold_system


def masked_conditionals(model_dir: str, prompt_ids: list[int], path_ids: list[int], labels: tuple[str, ...]) -> list[float]:
    """Reference, by transformers over the whole vocabulary: at each step of the answer, the
    probability of its token among the tokens that keep the answer on the way to some label
    (and end-of-turn once it is one) - what the choice grammar allows."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pieces = {token_id: tokenizer.decode([token_id]) for token_id in range(len(tokenizer))}
    special = set(tokenizer.all_special_ids)
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    with torch.inference_mode():
        logprobs = model(input_ids=torch.tensor([prompt_ids + path_ids])).logits[0].float().log_softmax(-1)
    conditionals, answer = [], ""
    for step, token_id in enumerate(path_ids):
        allowed = [t for t, piece in pieces.items() if t not in special and piece
                   and any(label.startswith(answer + piece) for label in labels)]
        allowed += [end] if answer in labels else []
        row = logprobs[len(prompt_ids) + step - 1]
        conditionals.append(math.exp(row[token_id].item() - torch.logsumexp(row[allowed], 0).item()))
        answer += pieces[token_id] if token_id != end else ""
    return conditionals


def test_label_probabilities_follow_the_masked_token_logprobs_of_the_real_server(
        vllm_server: str, vllm_engine: Any, tiny_gemma_dir: Any) -> None:
    request = ask("Which one describes the data?", choices=LABELS)
    engine = client(vllm_server)
    body = engine._body(request)
    raw = httpx.post(f"{vllm_server}/chat/completions", json=body, timeout=60).json()
    by_id = httpx.post(f"{vllm_server}/chat/completions", json=body | {"return_tokens_as_token_ids": True},
                       timeout=60).json()
    content = raw["choices"][0]["logprobs"]["content"]
    path_ids = [int(entry["token"].split(":")[1]) for entry in by_id["choices"][0]["logprobs"]["content"]]
    prompt_ids = vllm_engine.tokenizer(vllm_engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": request.messages[0].content}], tokenize=False, add_generation_prompt=True),
        add_special_tokens=False)["input_ids"]
    assert raw["usage"]["prompt_tokens"] == len(prompt_ids)

    # The server's logprobs are the grammar-masked conditionals: what the label trie multiplies.
    reference = masked_conditionals(str(tiny_gemma_dir), prompt_ids, path_ids, LABELS)
    served = [math.exp(entry["logprob"]) for entry in content]
    assert served == pytest.approx(reference, abs=1e-3)

    [completion] = engine.generate([request])
    distribution = {label: math.exp(v) for label, v in (completion.choices[0].choice_logprobs or {}).items()}
    assert distribution == pytest.approx({k: math.exp(v) for k, v in choice_logprobs_of(LABELS, raw["choices"][0]["logprobs"]).items()})
    assert math.isclose(sum(distribution.values()), 1.0, abs_tol=1e-4)
    sampled = raw["choices"][0]["message"]["content"]
    assert distribution[sampled] >= math.prod(served) - 1e-6  # its path, plus any share from beside it

    # The in-process engine reads the same answer the same way.
    [in_process] = vllm_engine.generate([request])
    assert in_process.text == completion.text
    assert {k: math.exp(v) for k, v in (in_process.choices[0].choice_logprobs or {}).items()} == pytest.approx(
        distribution, abs=1e-3)
