"""Closed-choice answers by log-likelihood: the transformers backend, which scores every label
on the prompt's shared KV cache. (vLLM answers a closed choice with one constrained request
instead: constrained_choice.)

A label is scored as the assistant's complete answer: the summed log-probability of the
label's tokens followed by the end-of-turn token, after the chat-templated prompt. The
end-of-turn token makes this the probability of "the answer is exactly this label", so a
label that is a prefix of another ("harm" / "harmful") gets no free advantage. Scores are
not length-normalised: the sum is a true log-probability of the answer, and the softmax over
the allowed labels turns the sums into the distribution the model puts on the closed set.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from tasks.engines.base import ChatRequest, Choice


def label_continuation(tokenizer: Any, label: str) -> list[int]:
    """Token ids of `label` as a complete assistant answer: its tokens, then end-of-turn."""
    return tokenizer(label, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def normalise_over_choices(summed_logprobs: Mapping[str, float]) -> dict[str, float]:
    """Log-softmax over the labels: log-probabilities that sum to 1 in probability space."""
    top = max(summed_logprobs.values())
    log_total = top + math.log(sum(math.exp(score - top) for score in summed_logprobs.values()))
    return {label: score - log_total for label, score in summed_logprobs.items()}


def choices_from_scores(
    request: ChatRequest, summed_logprobs: Mapping[str, float], label_token_counts: Mapping[str, int]
) -> tuple[Choice, ...]:
    """`n` answers from the label distribution: the argmax at temperature 0, else draws from the
    distribution sharpened or flattened by the temperature (seeded by the request's seed)."""
    distribution = normalise_over_choices(summed_logprobs)
    sampling = request.sampling
    if sampling.temperature == 0:
        picks = [max(distribution, key=distribution.__getitem__)] * sampling.n
    else:
        tempered = normalise_over_choices({k: v / sampling.temperature for k, v in distribution.items()})
        labels = list(tempered)
        picks = random.Random(sampling.seed).choices(labels, weights=[math.exp(tempered[k]) for k in labels],
                                                     k=sampling.n)
    return tuple(
        Choice(text=label, finish_reason="stop", completion_tokens=label_token_counts[label],
               choice_logprobs=distribution)
        for label in picks
    )
