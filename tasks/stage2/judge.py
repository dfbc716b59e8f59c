"""Stage 2 of response rejection sampling: an LLM judge scores each candidate 1-10.

Two modes, chosen by `responses.judge_mode` (default "json"; the local profile picks "choice"):

- ``json``: the judge answers ``{"score": 1-10, "critique": "..."}`` under a JSON schema.
  Parsing is forgiving: a JSON object, a JSON object inside other text, or a bare leading
  number ("7", "7/10 - too vague") all count.
- ``choice``: the judge picks one of the labels "1".."10" (closed choice, for small models
  that never write JSON). The score is the expected value of the label under the
  engine's label probabilities (softmax of `choice_logprobs` over the ten labels), so a
  judge torn between 6 and 8 scores 7; without log-probabilities the picked label is the
  score. This mode gives no critique.

An unusable answer (unparseable, out of range, engine error) is asked once more with
another seed, then recorded as unusable. With a greedy judge (temperature 0) the second
seed mainly reaches past the request cache, which helps with backends that are not
deterministic or that failed transiently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tasks.core import StepContext, request_seed
from tasks.engines.base import ChatRequest, Completion

TEMPLATE = "judge"
MIN_SCORE, MAX_SCORE = 1, 10
CRITIQUE_MAX_CHARS = 300
SCORE_CHOICES = tuple(str(score) for score in range(MIN_SCORE, MAX_SCORE + 1))
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
        "critique": {"type": "string", "maxLength": CRITIQUE_MAX_CHARS},
    },
    "required": ["score", "critique"],
    "additionalProperties": False,
}
JudgeMode = Literal["json", "choice"]

# "7", "Score: 7", "7/10 - vague": the number, then whatever follows as the critique.
_LEADING_NUMBER = re.compile(
    r"^\s*(?:score\s*[:=]?\s*)?(\d+(?:\.\d+)?)(?:\s*/\s*10)?\b[\s.,:;-]*(.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    """The judge's view of one candidate. `score` None means the answer was unusable."""

    score: float | None
    critique: str
    raw: str

    @property
    def usable(self) -> bool:
        return self.score is not None


@dataclass(frozen=True)
class JudgeItem:
    """One candidate to judge, with what the judge prompt needs."""

    prompt_text: str
    target: str
    candidate_text: str
    labels: Mapping[str, str]  # dimension -> label of the prompt


def _in_range(score: float) -> bool:
    return MIN_SCORE <= score <= MAX_SCORE


def _verdict_from_object(data: Any, raw: str) -> Verdict | None:
    if not isinstance(data, dict) or isinstance(data.get("score"), bool):
        return None
    try:
        score = float(data.get("score"))
    except (TypeError, ValueError):
        return None
    if not _in_range(score):
        return None
    return Verdict(score, str(data.get("critique") or "")[:CRITIQUE_MAX_CHARS], raw)


def _embedded_objects(text: str) -> list[Any]:
    """Every JSON value that starts at a "{" in the text (models wrap JSON in prose or fences)."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            found.append(decoder.raw_decode(text, match.start())[0])
        except json.JSONDecodeError:
            continue
    return found


def parse_judgement(text: str) -> Verdict | None:
    """A verdict from a judge's free text, or None when no in-range score can be read."""
    for candidate in _embedded_objects(text):
        verdict = _verdict_from_object(candidate, text)
        if verdict:
            return verdict
    match = _LEADING_NUMBER.match(text)
    if match and _in_range(float(match.group(1))):
        return Verdict(float(match.group(1)), match.group(2).strip()[:CRITIQUE_MAX_CHARS], text)
    return None


def expected_score(choice_logprobs: Mapping[str, float]) -> float | None:
    """Expected score under the softmax of the labels' log-probabilities; None without any."""
    weights = {label: math.exp(choice_logprobs[label]) for label in SCORE_CHOICES if label in choice_logprobs}
    total = sum(weights.values())
    if not total:
        return None
    return sum(int(label) * weight for label, weight in weights.items()) / total


def read_verdict(completion: Completion, mode: JudgeMode) -> Verdict | None:
    if not completion.ok:
        return None
    choice = completion.choices[0]
    if mode == "choice" and choice.choice_logprobs:
        score = expected_score(choice.choice_logprobs)
        return Verdict(score, "", choice.text) if score is not None else None
    return parse_judgement(choice.text)


def judge_requests(items: Sequence[JudgeItem], context: StepContext, attempt: int) -> list[ChatRequest]:
    template = context.prompts.get(TEMPLATE)
    mode = context.spec.responses.judge_mode
    # One seed per attempt for the whole batch (backends batch only equal sampling settings);
    # the retry's new seed also gives it a new request-cache key.
    seed = request_seed(context.seed, TEMPLATE, attempt)
    sampling = context.spec.responses.judge_sampling.model_copy(update={"n": 1, "seed": seed})
    constraint: dict[str, Any] = {"choices": SCORE_CHOICES} if mode == "choice" else {"json_schema": JUDGE_SCHEMA}
    return [
        ChatRequest(
            messages=template.render(
                prompt=item.prompt_text, target=item.target, response=item.candidate_text,
                labels=dict(item.labels), json_mode=mode == "json",
            ),
            sampling=sampling,
            **constraint,
        )
        for item in items
    ]


def judge_items(items: Sequence[JudgeItem], context: StepContext) -> tuple[list[Verdict], int]:
    """Score every item (one batch, then one retry batch for the unusable answers).

    Returns one verdict per item, in order (score None when still unusable), and the
    number of retried requests.
    """
    if not items:
        return [], 0
    engine = context.engine("judge")
    mode = context.spec.responses.judge_mode
    completions = engine.generate(judge_requests(items, context, attempt=0))
    verdicts: list[Verdict | None] = [read_verdict(c, mode) for c in completions]
    raw = [c.error or c.text for c in completions]
    retry = [i for i, verdict in enumerate(verdicts) if verdict is None]
    if retry:
        retried = engine.generate(judge_requests([items[i] for i in retry], context, attempt=1))
        for index, completion in zip(retry, retried, strict=True):
            verdicts[index] = read_verdict(completion, mode)
            raw[index] = completion.error or completion.text
    return [v if v is not None else Verdict(None, "", r) for v, r in zip(verdicts, raw, strict=True)], len(retry)
