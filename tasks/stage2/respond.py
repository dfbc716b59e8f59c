"""Stage II: two-stage rejection sampling with feedback-guided resampling.

For every (prompt, generator, target) of a shard ("task"):

- round 0 samples K candidates (K = `responses.candidates`) with `prompts/respond.yaml`;
- stage 1 drops candidates that fail a rule filter (`tasks.stage2.filters`) or nearly repeat a
  candidate the task already kept; stage 2 has the judge score the rest 1-10;
- a task passes when a candidate scores >= `judge_threshold`; otherwise feedback round
  r = 1..`feedback_iterations` samples K new candidates with `prompts/respond_feedback.yaml`,
  showing the best candidate so far and the judge's critique. The loop stops at the bound.

Each round is one batch per generator and one judge batch (plus one retry batch) for
the whole shard. The K candidates of a task are one request with n=K, and every request
of a round shares one seed (derived from the spec seed and the round): backends batch
only requests with equal sampling settings (the transformers backend generates each
distinct setting apart), so per-candidate seeds would turn a batch into single calls.
Reruns repeat the same requests, so they hit the request cache; vLLM honours the seed per
request, the transformers backend per batch.

The selected candidate of a task is its best passing one (highest score, ties to the
earliest attempt). With `responses.require_pass` off, a task without a passing
candidate selects its best scored one, and the prompt keeps `pass_{target}` False.
`passed` in the responses table means "selected for release": True only for the selected
candidate of a kept prompt. Every other candidate is a candidate reject, with the reason
it lost: a filter code, `engine_error` (or the engine's own reason: `prompt_too_long`,
`template_error`), `judge_unusable`, `judge_below_threshold`,
`not_best`, or `prompt_rejected` (its prompt lacked a passing response for another task).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import RESPONSE_SCHEMA
from tasks.core import StepContext, StepResult, make_rejects, request_seed, stable_id, text_sha
from tasks.engines.base import ChatRequest, Completion
from tasks.stage2.filters import apply_filters, near_duplicate, response_fingerprints
from tasks.stage2.judge import JudgeItem, judge_items

STAGE = "respond"
TEMPLATE = "respond"
FEEDBACK_TEMPLATE = "respond_feedback"
REJECT_TEXT_CHARS = 200

# What the generator is told in a feedback round when no candidate of the task was scored.
REASON_FEEDBACK = {
    "empty": "The response was empty.",
    "truncated": "The response was cut off at the length limit; write a shorter, complete answer.",
    "too_short": "The response was too short to be useful.",
    "wrong_language": "The response was not written in English.",
    "echoes_prompt": "The response mostly repeated the prompt instead of answering it.",
    "refusal": "The response refused instead of answering.",
    "near_duplicate": "The response repeated an earlier one almost word for word.",
    "judge_unusable": "The response could not be evaluated.",
    "engine_error": "No response was produced.",
}


@dataclass(frozen=True)
class Task:
    """One (prompt, generator, target): it needs one passing candidate."""

    prompt_id: str
    prompt_text: str = field(compare=False)
    prompt_sha: str = field(compare=False)
    labels: Mapping[str, str] = field(compare=False)
    generator: str
    target: str


@dataclass
class Candidate:
    """One sampled response and what happened to it; `reason` stays None while it competes."""

    response_id: str
    task: Task
    template_sha: str
    attempt: int
    feedback_round: int
    text: str
    finish_reason: str | None
    completion_tokens: int | None
    reason: str | None = None
    detail: str | None = None
    score: float | None = None
    critique: str | None = None

    @property
    def judged(self) -> bool:
        return self.reason is None and self.score is not None


def response_id(task: Task, attempt: int) -> str:
    return stable_id("response", task.prompt_id, task.generator, task.target, attempt)


def prompt_labels(row: Mapping[str, Any], dimensions: Sequence[str]) -> dict[str, str]:
    return {d: row[f"{d}_label"] for d in dimensions if row.get(f"{d}_label") is not None}


def best_candidate(candidates: Sequence[Candidate], threshold: float | None = None) -> Candidate | None:
    """Highest-scoring judged candidate (ties: earliest attempt), at or above `threshold` if given."""
    eligible = [c for c in candidates if c.judged and (threshold is None or c.score >= threshold)]
    return min(eligible, key=lambda c: (-c.score, c.attempt)) if eligible else None


def feedback_variables(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """The previous response and critique a feedback round shows the generator."""
    best = best_candidate(candidates)
    if best is not None:
        return {"previous": best.text, "score": round(best.score, 1), "critique": best.critique or ""}
    latest = max(candidates, key=lambda c: c.attempt)
    return {"previous": latest.text, "score": None, "critique": REASON_FEEDBACK.get(latest.reason or "", "")}


def _sample_round(tasks: Sequence[Task], history: Mapping[Task, list[Candidate]], feedback_round: int,
                  context: StepContext) -> list[Candidate]:
    """Sample K new candidates for every task: one request with n=K per task, one batch per generator."""
    k = context.spec.responses.candidates
    template = context.prompts.get(FEEDBACK_TEMPLATE if feedback_round else TEMPLATE)
    # One seed for the whole round: backends batch only requests with equal sampling settings.
    sampling = context.spec.responses.sampling.model_copy(
        update={"n": k, "seed": request_seed(context.seed, STAGE, feedback_round)})
    by_generator: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        by_generator[task.generator].append(task)
    new: list[Candidate] = []
    for generator, generator_tasks in by_generator.items():
        requests = [
            ChatRequest(messages=template.render(
                prompt=task.prompt_text, target=task.target, labels=dict(task.labels),
                **(feedback_variables(history[task]) if feedback_round else {})), sampling=sampling)
            for task in generator_tasks
        ]
        completions = context.engine("generator", generator).generate(requests)
        for task, completion in zip(generator_tasks, completions, strict=True):
            new.extend(_candidates(task, len(history[task]), feedback_round, template.sha256, completion, k))
    return new


def _candidates(task: Task, first_attempt: int, feedback_round: int, template_sha: str, completion: Completion,
                k: int) -> list[Candidate]:
    """The request's answers as candidates; a failed request stands for K failed candidates."""
    def candidate(offset: int, text: str, finish_reason: str, tokens: int) -> Candidate:
        return Candidate(response_id(task, first_attempt + offset), task, template_sha, first_attempt + offset,
                         feedback_round, text, finish_reason, tokens)

    if completion.ok:
        return [candidate(i, c.text, c.finish_reason, c.completion_tokens) for i, c in enumerate(completion.choices)]
    failed = [candidate(i, "", "error", 0) for i in range(k)]
    for c in failed:
        c.reason, c.detail = completion.reason or "engine_error", (completion.error or "no answer")[:REJECT_TEXT_CHARS]
    return failed


def _screen(new: Sequence[Candidate], kept_fingerprints: dict[Task, list[int]], context: StepContext) -> None:
    """Stage 1: rule filters, then near-duplicates of candidates the task already kept."""
    params = context.spec.responses.filters
    for candidate in new:
        if candidate.reason is None:
            task = candidate.task
            candidate.reason = apply_filters(candidate.text, task.prompt_text, candidate.finish_reason, task.target,
                                             params)
    survivors = [c for c in new if c.reason is None]
    for candidate, fingerprint in zip(survivors, response_fingerprints([c.text for c in survivors]), strict=True):
        candidate.reason = near_duplicate(fingerprint, kept_fingerprints[candidate.task], params.near_duplicate_tau)
        if candidate.reason is None:
            kept_fingerprints[candidate.task].append(fingerprint)


def _judge(new: Sequence[Candidate], context: StepContext) -> int:
    """Stage 2: score the round's surviving candidates in one batch; returns the retries."""
    survivors = [c for c in new if c.reason is None]
    items = [JudgeItem(c.task.prompt_text, c.task.target, c.text, c.task.labels) for c in survivors]
    verdicts, retries = judge_items(items, context)
    for candidate, verdict in zip(survivors, verdicts, strict=True):
        if verdict.usable:
            candidate.score, candidate.critique = verdict.score, verdict.critique
        else:
            candidate.reason, candidate.detail = "judge_unusable", verdict.raw[:REJECT_TEXT_CHARS]
    return retries


def _select(candidates: Sequence[Candidate], threshold: float, require_pass: bool) -> Candidate | None:
    """The task's selected candidate; settles every other candidate's reason."""
    selected = best_candidate(candidates, threshold) or (None if require_pass else best_candidate(candidates))
    for candidate in candidates:
        if candidate is not selected and candidate.reason is None:
            candidate.reason = "judge_below_threshold" if candidate.score < threshold else "not_best"
    return selected


def generate_responses(table: pa.Table, context: StepContext, *, joint_pass: str | None = None) -> StepResult:
    """Rejection-sample one selected response per (prompt, generator, target) of the shard;
    with `joint_pass` (CULTURAX's "hhh") a `pass_<name>` column says every target passed."""
    responses_spec = context.spec.responses
    threshold = responses_spec.judge_threshold
    dimensions = [d.name for d in context.spec.dimensions]
    label_columns = [f"{d}_label" for d in dimensions if f"{d}_label" in table.column_names]
    rows = table.select(["prompt_id", "text", *label_columns]).to_pylist()
    tasks_by_prompt = {
        row["prompt_id"]: [
            Task(row["prompt_id"], row["text"], text_sha(row["text"]), prompt_labels(row, dimensions), generator,
                 target)
            for generator in context.spec.models.generators for target in responses_spec.targets
        ]
        for row in rows
    }
    tasks = [task for prompt_tasks in tasks_by_prompt.values() for task in prompt_tasks]

    history: dict[Task, list[Candidate]] = {task: [] for task in tasks}
    kept_fingerprints: dict[Task, list[int]] = {task: [] for task in tasks}
    counts: Counter[str] = Counter()
    open_tasks = tasks
    for feedback_round in range(1 + responses_spec.feedback_iterations):
        if not open_tasks:
            break
        new = _sample_round(open_tasks, history, feedback_round, context)
        for candidate in new:
            history[candidate.task].append(candidate)
        counts["engine_errors"] += sum(c.reason == "engine_error" for c in new)
        _screen(new, kept_fingerprints, context)
        counts["stage1_passed"] += sum(c.reason is None for c in new)
        counts["judge_retries"] += _judge(new, context)
        counts["judge_usable"] += sum(c.judged for c in new)
        counts["judge_passed"] += sum(c.judged and c.score >= threshold for c in new)
        counts["feedback_candidates"] += len(new) if feedback_round else 0
        open_tasks = [task for task in open_tasks if best_candidate(history[task], threshold) is None]

    require_pass = responses_spec.require_pass
    selected = {task: _select(history[task], threshold, require_pass) for task in tasks}
    passing = {task: selected[task] is not None and selected[task].score >= threshold for task in tasks}
    keep_mask, prompt_rejects = [], []
    for row in rows:
        failing = [task for task in tasks_by_prompt[row["prompt_id"]] if not passing[task]]
        keep_mask.append(not (failing and require_pass))
        if not keep_mask[-1]:
            prompt_rejects.append(_prompt_reject(row, failing))
            for task in tasks_by_prompt[row["prompt_id"]]:
                if selected[task] is not None:
                    selected[task].reason = "prompt_rejected"
    kept_tasks = [tasks_by_prompt[row["prompt_id"]] for row, keep in zip(rows, keep_mask, strict=True) if keep]
    kept = _with_target_columns(table.filter(pa.array(keep_mask, pa.bool_())), kept_tasks, selected, passing, context,
                                joint_pass)

    candidates = [c for task in tasks for c in history[task]]
    published = [c for c in candidates if c.reason is None]
    counts.update(tasks=len(tasks), tasks_passed=sum(passing.values()), candidates_generated=len(candidates),
                  selected=len(published))
    return StepResult(
        kept=kept, rejects=make_rejects(prompt_rejects + [_candidate_reject(c) for c in candidates if c.reason]),
        stats=dict(counts), side={"responses": responses_table(candidates)},
        candidates_generated=len(candidates), candidates_kept=len(published),
    )


def _prompt_reject(row: Mapping[str, Any], failing: Sequence[Task]) -> dict[str, Any]:
    return {"record_id": row["prompt_id"], "unit": "prompt", "stage": STAGE, "reason": "no_passing_response",
            "detail": "no passing response for " + ", ".join(f"{t.target} ({t.generator})" for t in failing),
            "text": row["text"][:REJECT_TEXT_CHARS]}


def _candidate_reject(candidate: Candidate) -> dict[str, Any]:
    return {"record_id": candidate.response_id, "unit": "candidate", "stage": STAGE, "reason": candidate.reason,
            "detail": candidate.detail, "related_id": candidate.task.prompt_id,
            "text": candidate.text[:REJECT_TEXT_CHARS]}


def _with_target_columns(kept: pa.Table, kept_tasks: Sequence[Sequence[Task]],
                         selected: Mapping[Task, Candidate | None], passing: Mapping[Task, bool],
                         context: StepContext, joint_pass: str | None) -> pa.Table:
    """Per target: `{target}_score` (the lowest selected score over generators) and
    `pass_{target}` (every generator passed); `pass_<joint_pass>` when every target passed."""
    targets = context.spec.responses.targets
    flags: dict[str, list[bool]] = {}
    for target in targets:
        scores, flags[target] = [], []
        for prompt_tasks in kept_tasks:
            mine = [t for t in prompt_tasks if t.target == target]
            chosen = [selected[t].score for t in mine if selected[t] is not None]
            scores.append(min(chosen) if len(chosen) == len(mine) else None)
            flags[target].append(all(passing[t] for t in mine))
        kept = _with_column(kept, f"{target}_score", pa.array(scores, pa.float64()))
        kept = _with_column(kept, f"pass_{target}", pa.array(flags[target], pa.bool_()))
    if joint_pass:
        kept = _with_column(kept, f"pass_{joint_pass}", pa.array([all(f) for f in zip(*flags.values(), strict=True)], pa.bool_()))
    return kept


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def responses_table(candidates: Sequence[Candidate]) -> pa.Table:
    rows = [
        {"response_id": c.response_id, "prompt_id": c.task.prompt_id, "prompt_sha": c.task.prompt_sha,
         "target": c.task.target, "generator_model": c.task.generator, "template_sha": c.template_sha,
         "attempt": c.attempt, "feedback_round": c.feedback_round, "text": c.text, "finish_reason": c.finish_reason,
         "completion_tokens": c.completion_tokens, "judge_score": c.score, "judge_critique": c.critique,
         "passed": c.reason is None}
        for c in candidates
    ]
    return pa.Table.from_pylist(rows, schema=RESPONSE_SCHEMA)


def check_response_integrity(prompts: pa.Table, responses: pa.Table) -> list[str]:
    """Problems that would make a response answer the wrong prompt; empty when sound.

    Every response must name a prompt of `prompts` and carry the digest of that prompt's
    text (a shifted row fails this), and each (prompt, generator, target) has at most one
    selected response, exactly one where the prompt marks `pass_{target}` (or has no such
    column). Pass the prompts the responses belong to: responses of prompts dropped on
    purpose are filtered out first (as `tasks.release.tables` does).
    """
    problems: list[str] = []
    prompt_ids = prompts["prompt_id"].to_pylist()
    prompt_sha = {pid: text_sha(text) for pid, text in zip(prompt_ids, prompts["text"].to_pylist(), strict=True)}
    generators: dict[str, set[str]] = defaultdict(set)
    selected_count: Counter[tuple[str, str, str]] = Counter()
    columns = ["response_id", "prompt_id", "prompt_sha", "generator_model", "target", "passed"]
    for response in responses.select(columns).to_pylist():
        response_id, prompt_id = response["response_id"], response["prompt_id"]
        if prompt_id not in prompt_sha:
            problems.append(f"response {response_id} names unknown prompt {prompt_id}")
            continue
        if response["prompt_sha"] != prompt_sha[prompt_id]:
            problems.append(f"response {response_id} answers other text than prompt {prompt_id}")
        generators[prompt_id].add(response["generator_model"])
        selected_count[(prompt_id, response["generator_model"], response["target"])] += bool(response["passed"])
    problems.extend(f"prompt {pid} has no responses" for pid in prompt_ids if pid not in generators)
    targets = sorted(set(responses["target"].to_pylist()))
    must_pass = {t: prompts[f"pass_{t}"].to_pylist() if f"pass_{t}" in prompts.column_names
                 else [True] * len(prompt_ids) for t in targets}
    for index, prompt_id in enumerate(prompt_ids):
        for generator in sorted(generators[prompt_id]):
            for target in targets:
                count = selected_count[(prompt_id, generator, target)]
                if count > 1 or (count == 0 and must_pass[target][index]):
                    problems.append(f"prompt {prompt_id}: {count} selected {target} responses from {generator}")
    return problems


def responses_of(prompts: pa.Table, responses: pa.Table) -> pa.Table:
    """The responses that answer prompts of `prompts` (e.g. the kept ones)."""
    return responses.filter(pc.is_in(responses["prompt_id"], value_set=prompts["prompt_id"]))
