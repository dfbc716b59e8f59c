"""Stage I, step 2: reclassify every prompt into each dimension's taxonomy.

The answer is a closed choice: the engine is asked for one of the allowed labels
(constrained decoding or label scoring, whichever the backend does). Probabilities come
from the engine's per-choice log-probabilities where it returns them, otherwise the
chosen label counts as probability 1. A label is kept when its probability reaches the
spec's threshold delta; labels above delta form the multi-label set. An answer outside
the set is retried (bounded), then recorded as `Unknown` with the raw text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from schemas.taxonomy import Taxonomy
from tasks.core import StepContext, StepResult, make_rejects
from tasks.engines.base import ChatRequest, Completion, SamplingParams

TEMPLATE = "classify"


@dataclass(frozen=True)
class LabelDecision:
    label: str
    label_id: int
    score: float | None  # probability of the label; None when unknown
    labels: tuple[str, ...]  # every label with probability >= threshold
    raw: str | None  # the raw answer when it could not be used


def label_probabilities(completion: Completion, allowed: list[str]) -> dict[str, float] | None:
    """Per-label probabilities from the engine's answer, or None when the answer is unusable."""
    if not completion.ok:
        return None
    choice = completion.choices[0]
    if choice.choice_logprobs:
        if not set(choice.choice_logprobs) <= set(allowed):
            return None
        probabilities = {label: math.exp(choice.choice_logprobs.get(label, -math.inf)) for label in allowed}
        total = sum(probabilities.values())
        return {label: p / total for label, p in probabilities.items()} if total > 0 else None
    answer = choice.text.strip().strip('."\'').strip()
    matches = [label for label in allowed if label.lower() == answer.lower()]
    return {label: float(label == matches[0]) for label in allowed} if matches else None


def decide(probabilities: dict[str, float] | None, taxonomy: Taxonomy, threshold: float, raw: str | None) -> LabelDecision:
    unknown = taxonomy.unknown
    if probabilities is None:
        return LabelDecision(unknown.name, unknown.id, None, (), raw)
    best = max(probabilities, key=lambda label: (probabilities[label], -taxonomy.allowed_labels.index(label)))
    above = tuple(label for label in taxonomy.allowed_labels if probabilities[label] >= threshold)
    if probabilities[best] < threshold:
        # No label is probable enough: the classifier could not decide.
        return LabelDecision(unknown.name, unknown.id, probabilities[best], above, f"best {best} at {probabilities[best]:.3f}")
    return LabelDecision(best, taxonomy.label_id(best), probabilities[best], above, None)


def classification_requests(texts: list[str], taxonomy: Taxonomy, dimension: str, context: StepContext, attempt: int) -> list[ChatRequest]:
    template = context.prompts.get(TEMPLATE)
    sampling = context.spec.classification.sampling
    variables = {
        "dimension": dimension, "taxonomy_title": taxonomy.title,
        "domains": [d.model_dump() for d in taxonomy.domains],
        "none_label": taxonomy.none.name if taxonomy.none else None,
    }
    return [
        ChatRequest(
            messages=template.render(text=text, **variables),
            sampling=_with_seed(sampling, context.seed + attempt),
            choices=tuple(taxonomy.allowed_labels),
        )
        for text in texts
    ]


def classify_texts(texts: list[str], dimension: str, context: StepContext) -> list[LabelDecision]:
    """Label texts in one dimension, retrying unusable answers up to the spec's bound."""
    taxonomy = context.taxonomies[dimension]
    engine = context.engine("classifier")
    threshold = context.spec.classification.threshold
    decisions: list[LabelDecision | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    raw_answers: dict[int, str] = {}
    for attempt in range(context.spec.classification.max_attempts):
        if not pending:
            break
        requests = classification_requests([texts[i] for i in pending], taxonomy, dimension, context, attempt)
        completions = engine.generate(requests)
        still_pending = []
        for index, completion in zip(pending, completions, strict=True):
            probabilities = label_probabilities(completion, taxonomy.allowed_labels)
            if probabilities is None:
                raw_answers[index] = completion.error or completion.text
                still_pending.append(index)
                continue
            decisions[index] = decide(probabilities, taxonomy, threshold, None)
        pending = still_pending
    for index in pending:
        decisions[index] = decide(None, taxonomy, threshold, raw_answers.get(index, "")[:500])
    return [d for d in decisions if d is not None]


def classify_shard(table: pa.Table, context: StepContext) -> StepResult:
    """Label every prompt of a shard in every dimension; rows lacking a required label leave."""
    texts = table["text"].to_pylist()
    columns: dict[str, list[Any]] = {}
    stats: dict[str, float] = {}
    for dimension in context.taxonomies:
        decisions = classify_texts(texts, dimension, context)
        columns[f"{dimension}_label"] = [d.label for d in decisions]
        columns[f"{dimension}_id"] = [d.label_id for d in decisions]
        columns[f"{dimension}_score"] = [d.score for d in decisions]
        columns[f"{dimension}_labels"] = [list(d.labels) for d in decisions]
        columns[f"{dimension}_raw"] = [d.raw for d in decisions]
        stats[f"{dimension}_unknown"] = sum(d.label == context.taxonomies[dimension].unknown.name for d in decisions)
    labelled = _replace_columns(table, columns)
    return _require_labels(labelled, context, stats)


def _require_labels(table: pa.Table, context: StepContext, stats: dict[str, float]) -> StepResult:
    required = context.spec.classification.require_label
    if not required:
        return StepResult(kept=table, stats=stats)
    keep_mask, rejects = [], []
    rows = table.select(["prompt_id", "text", *[f"{d}_label" for d in required]]).to_pylist()
    for row in rows:
        missing = [d for d in required if row[f"{d}_label"] in _unlabelled(context.taxonomies[d])]
        keep_mask.append(not missing)
        if missing:
            rejects.append({"record_id": row["prompt_id"], "unit": "prompt", "stage": "classify",
                            "reason": "unlabelled", "detail": ", ".join(f"{d}={row[f'{d}_label']}" for d in missing),
                            "text": row["text"][:200]})
    return StepResult(kept=table.filter(pa.array(keep_mask, pa.bool_())), rejects=make_rejects(rejects), stats=stats)


def _unlabelled(taxonomy: Taxonomy) -> set[str]:
    return {taxonomy.unknown.name} | ({taxonomy.none.name} if taxonomy.none else set())


def _replace_columns(table: pa.Table, columns: dict[str, list[Any]]) -> pa.Table:
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(name), pa.array(values, type=table.schema.field(name).type))
    return table


def _with_seed(sampling: SamplingParams, seed: int) -> SamplingParams:
    return sampling.model_copy(update={"seed": seed})
