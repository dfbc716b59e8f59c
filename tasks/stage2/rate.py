"""Stage II for Demo-SafetyBench: LLMs as zero-shot safety raters.

Every conversation (prompt text = context + response) is rated by every model of
`spec.models.raters` with `prompts/rate.yaml`, which names the conversation's safety
domain (the label of the spec's first dimension). The answer is a closed choice over
`responses.rating_scale` ("Is this conversation unsafe?": Yes / No / Unsure); its first
label is the "unsafe" answer, whose probability is `p_unsafe` where the engine returns
per-label log-probabilities. Raters sample with `responses.judge_sampling` (default
temperature 0, top-p 1: the paper's rater settings), one seed per (rater, attempt).
An answer outside the scale is asked once more with another seed, then recorded as
"Unknown" with its raw text. Raters label, never filter: every prompt is kept.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from schemas.records import RATING_SCHEMA
from tasks.core import StepContext, StepResult, request_seed
from tasks.engines.base import ChatRequest, Completion

STAGE = "rate"
TEMPLATE = "rate"
UNKNOWN_RATING = "Unknown"
RAW_OUTPUT_CHARS = 500


@dataclass(frozen=True)
class Rating:
    label: str | None  # None: outside the scale
    p_unsafe: float | None
    raw: str


def match_label(text: str, scale: Sequence[str]) -> str | None:
    """The scale label a free-text answer gives: the whole answer or its first word."""
    answer = text.strip().strip("\"'`*.!").strip()
    lowered = {label.lower(): label for label in scale}
    if answer.lower() in lowered:
        return lowered[answer.lower()]
    first_word = answer.split(maxsplit=1)[0].strip("\"'`*.,:;!").lower() if answer else ""
    return lowered.get(first_word)


def read_rating(completion: Completion, scale: Sequence[str]) -> Rating:
    if not completion.ok:
        return Rating(None, None, f"engine error: {completion.error}")
    choice = completion.choices[0]
    logprobs = {label: lp for label, lp in (choice.choice_logprobs or {}).items() if label in scale}
    if logprobs:
        weights = {label: math.exp(lp) for label, lp in logprobs.items()}
        total = sum(weights.values())
        if total > 0:
            best = max(scale, key=lambda label: weights.get(label, 0.0))  # ties: earlier scale label
            return Rating(best, weights.get(scale[0], 0.0) / total, choice.text)
    return Rating(match_label(choice.text, scale), None, choice.text)


def rate_conversations(table: pa.Table, context: StepContext) -> StepResult:
    """Rate every conversation with every rater model; the `ratings` side table holds the answers."""
    spec = context.spec
    scale = tuple(spec.responses.rating_scale)
    template = context.prompts.get(TEMPLATE)
    domain_column = f"{spec.dimensions[0].name}_label"
    prompt_ids = table["prompt_id"].to_pylist()
    texts = table["text"].to_pylist()
    domains = table[domain_column].to_pylist() if domain_column in table.column_names else [None] * table.num_rows
    messages = [template.render(conversation=text, domain=domain or "unknown", scale=list(scale))
                for text, domain in zip(texts, domains, strict=True)]

    def requests(indices: Sequence[int], rater: str, attempt: int) -> list[ChatRequest]:
        # One seed per (rater, attempt): backends batch only equal sampling settings.
        seed = request_seed(context.seed, STAGE, rater, attempt)
        sampling = spec.responses.judge_sampling.model_copy(update={"n": 1, "seed": seed})
        return [ChatRequest(messages=messages[i], choices=scale, sampling=sampling) for i in indices]

    rows, counts = [], Counter()
    for rater in spec.models.raters:
        engine = context.engine("rater", rater)
        ratings = [read_rating(c, scale) for c in engine.generate(requests(range(len(prompt_ids)), rater, 0))]
        retry = [i for i, rating in enumerate(ratings) if rating.label is None]
        if retry:
            for index, completion in zip(retry, engine.generate(requests(retry, rater, 1)), strict=True):
                ratings[index] = read_rating(completion, scale)
        counts["retries"] += len(retry)
        for prompt_id, domain, rating in zip(prompt_ids, domains, ratings, strict=True):
            label = rating.label or UNKNOWN_RATING
            counts[f"rating_{label}"] += 1
            rows.append({
                "prompt_id": prompt_id, "rater_model": rater, "domain": domain, "rating": label,
                "p_unsafe": rating.p_unsafe, "raw_output": rating.raw[:RAW_OUTPUT_CHARS],
                "template_sha": template.sha256,
            })
    counts["ratings"] = len(rows)
    ratings_table = pa.Table.from_pylist(rows, schema=RATING_SCHEMA)
    return StepResult(kept=table, stats=dict(counts), side={"ratings": ratings_table})
