"""Plan before you pay: what a build will ask of each model, before it asks.

`estimate_build` turns a spec, a profile and the source's size into requests, input and
output tokens per stage and model, each as [lower, upper] bounds with the assumption that
makes them bounds; time and money follow from the profile's throughput and prices only.
Token counts come from the real templates (`prompts/`) rendered the way the steps render
them, over real source texts, counted by the model's tokenizer when one loads offline.

The estimate itself is pure (no model calls, no network). Beside it: `loads` (bounds and
their totals), `tokens` (token counters), `render` (tables), and the cheap I/O a plan
needs: `inputs` (source rows and sample texts without loading the source) and
`calibration` (a model's throughput, measured once per machine).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from schemas.profile import Profile
from schemas.spec import DatasetSpec
from schemas.taxonomy import Taxonomy
from tasks.config import PROMPTS_DIR, apply_profile, taxonomies_for
from tasks.core import StepContext
from tasks.engines.base import Engine, Message, SamplingParams
from tasks.planning.inputs import SAMPLE_TEXTS
from tasks.planning.loads import (
    NONE, Bounds, BuildPlan, ModelLoad, count_text, engine_label, exactly, is_priced, plural, token_cost,
)
from tasks.planning.tokens import TokenCounter, token_counters
from tasks.kinds import stage_two_kind
from tasks.prompts import PromptLibrary
from tasks.stage1.classify import classification_requests
from tasks.stage1.expand import TEMPLATE as EXPAND_TEMPLATE
from tasks.stage2.judge import CRITIQUE_MAX_CHARS, SCORE_CHOICES, JudgeItem, judge_requests
from tasks.stage2.rate import TEMPLATE as RATE_TEMPLATE
from tasks.stage2.respond import FEEDBACK_TEMPLATE, TEMPLATE as RESPOND_TEMPLATE

# Prompt processing is batched and parallel, decoding is one token at a time per sequence:
# prefill is assumed this many times faster than the measured decoding throughput.
PREFILL_SPEEDUP = 10.0
# Backends that answer a closed choice with one of the labels (transformers scores them by
# log-likelihood, vLLM decodes under a choice grammar: one request either way), so the
# answer's length is a label's tokens plus the end-of-turn token.
CHOICE_SCORING_BACKENDS = ("transformers", "vllm")
PLAN_STAGES = ("classify", "expand", "respond", "rate")


@dataclass(frozen=True)
class SamplePrompt:
    """A prompt as the templates see it: its text and its label per dimension."""

    text: str
    labels: Mapping[str, str]


class _Planner:
    """Renders the steps' real requests for sample prompts and turns counts into loads."""

    def __init__(self, spec: DatasetSpec, profile: Profile, counters: Mapping[str, TokenCounter],
                 throughputs: Mapping[str, float]) -> None:
        self.spec = spec
        self.profile = profile
        self.taxonomies: Mapping[str, Taxonomy] = taxonomies_for(spec)
        self.counters = counters
        self.throughputs = throughputs
        # The steps' own request builders need a context; the planner never asks it for an engine.
        self.context = StepContext(spec=spec, profile=profile, taxonomies=self.taxonomies,
                                   prompts=PromptLibrary(PROMPTS_DIR), engines=_no_engines)

    # -- counting --------------------------------------------------------------------------

    def request_tokens(self, model: str, messages: Sequence[Message]) -> int:
        """Input tokens of one request as the engine counts them: every message's content
        (an embedding classifier reads only the user message)."""
        if self.profile.engine_for(model).backend == "embedding":
            messages = [m for m in messages if m.role == "user"][-1:]
        return sum(self.counters[model](m.content) for m in messages)

    def mean_tokens(self, model: str, requests: Sequence[Sequence[Message]]) -> float:
        return sum(self.request_tokens(model, r) for r in requests) / len(requests)

    def answer_tokens(self, model: str, sampling: SamplingParams, choices: Sequence[str] | None = None) -> Bounds:
        """Output tokens of one request: n answers, each at least one token; a scored closed
        choice is a label plus end-of-turn, an embedding classifier generates nothing."""
        backend = self.profile.engine_for(model).backend
        if backend == "embedding":
            return NONE
        if choices and backend in CHOICE_SCORING_BACKENDS:
            lengths = [self.counters[model](label) + 1 for label in choices]
            return Bounds(min(lengths) * sampling.n, max(lengths) * sampling.n)
        return Bounds(sampling.n, sampling.max_tokens * sampling.n)

    def load(self, stage: str, role: str, model: str, rows: Bounds, requests: Bounds, input_tokens: Bounds,
             output_tokens: Bounds, assumption: str) -> ModelLoad:
        config = self.profile.engine_for(model)
        label = engine_label(config, model)
        tokens_per_second = config.output_tokens_per_second or self.throughputs.get(label)
        seconds = None
        if tokens_per_second is not None:
            prefill_per_second = tokens_per_second * PREFILL_SPEEDUP
            seconds = Bounds(output_tokens.lower / tokens_per_second + input_tokens.lower / prefill_per_second,
                             output_tokens.upper / tokens_per_second + input_tokens.upper / prefill_per_second)
        cost = None
        if is_priced(config):
            cost = Bounds(token_cost(config, input_tokens.lower, output_tokens.lower),
                          token_cost(config, input_tokens.upper, output_tokens.upper))
        return ModelLoad(stage, role, model, label, rows, requests, input_tokens, output_tokens, seconds, cost,
                         assumption)

    # -- stages ----------------------------------------------------------------------------

    def stage_loads(self, stage: str, samples: Sequence[SamplePrompt], rows: Bounds) -> list[ModelLoad]:
        """The loads of one build stage over `rows` prompts like `samples`."""
        if stage == "classify":
            return self.classify(samples, rows)
        if stage == "expand":
            return self.expand(samples)
        kind = stage_two_kind(self.spec)
        if stage == kind.stage:
            return kind.plan(self, samples, rows)
        raise ValueError(f"no plan for stage {stage!r}; stages: classify, expand, {kind.stage}")

    def classify(self, samples: Sequence[SamplePrompt], rows: Bounds) -> list[ModelLoad]:
        model = self.spec.models.classifier
        attempts = self.spec.classification.max_attempts
        texts = [s.text for s in samples]
        requests = input_tokens = output_tokens = NONE
        for dimension, taxonomy in self.taxonomies.items():
            rendered = classification_requests(texts, taxonomy, dimension, self.context, attempt=0)
            per_request = self.mean_tokens(model, [r.messages for r in rendered])
            dimension_requests = rows * Bounds(1, attempts)
            requests = requests + dimension_requests
            input_tokens = input_tokens + dimension_requests * exactly(per_request)
            output_tokens = output_tokens + dimension_requests * self.answer_tokens(
                model, self.spec.classification.sampling, taxonomy.allowed_labels)
        assumption = (f"{count_text(rows)} prompts x {plural(len(self.taxonomies), 'dimension')} x 1..{attempts} attempts "
                      f"(unusable answers are retried); input: mean of {len(samples)} source prompts")
        return [self.load("classify", "classifier", model, rows, requests, input_tokens, output_tokens, assumption)]

    def expansion_domains(self) -> list[str]:
        spec = self.spec.expansion
        return [d for d in self.taxonomies[spec.dimension].domain_names if d not in spec.skip_labels]

    def expansion_generations(self) -> int:
        """At most: every domain empty, asking ceil(target x oversample) in every round."""
        spec = self.spec.expansion
        rounds = spec.max_rounds if spec.enabled else 0
        return len(self.expansion_domains()) * math.ceil(spec.target_per_domain * spec.oversample) * rounds

    def expansion_accepted(self) -> int:
        """At most every domain's whole target is accepted (a round's quota is its deficit)."""
        return len(self.expansion_domains()) * self.spec.expansion.target_per_domain if self.expansion_generations() else 0

    def expand(self, samples: Sequence[SamplePrompt]) -> list[ModelLoad]:
        spec = self.spec.expansion
        generations = self.expansion_generations()
        if not generations:
            return []
        taxonomy = self.taxonomies[spec.dimension]
        template = self.context.prompts.get(EXPAND_TEMPLATE)
        # Few-shot examples are real prompts of the domain (its written examples when it has none):
        # the longest sample prompts, or the domain's examples where longer, make an upper estimate.
        longest = sorted((s.text for s in samples), key=len, reverse=True)[:spec.few_shot]
        expander = self.spec.models.expander

        def example_tokens(examples: list[str]) -> int:
            return sum(self.counters[expander](example) + 1 for example in examples)  # + its list marker

        per_request = max(
            self.request_tokens(expander, template.render(
                domain_name=domain.name, dimension=spec.dimension, domain_description=domain.description,
                examples=max(longest, list(domain.examples), key=example_tokens)))
            for domain in map(taxonomy.domain, self.expansion_domains())
        )
        generated = Bounds(0, generations)
        expander_load = self.load(
            "expand", "expander", expander, generated, generated, generated * exactly(per_request),
            generated * self.answer_tokens(expander, spec.sampling),
            f"0 (every domain at target) .. {plural(len(self.expansion_domains()), 'domain')} x "
            f"ceil({spec.target_per_domain} x {spec.oversample}) x {plural(spec.max_rounds, 'round')}; "
            f"input: the {spec.few_shot} longest sample prompts as examples")

        # Every generation is reclassified in every dimension; a generation is at most max_tokens long.
        classifier = self.spec.models.classifier
        attempts = self.spec.classification.max_attempts
        requests = input_tokens = output_tokens = NONE
        for dimension, dimension_taxonomy in self.taxonomies.items():
            empty = classification_requests([""], dimension_taxonomy, dimension, self.context, attempt=0)[0]
            per_classification = self.request_tokens(classifier, empty.messages) + spec.sampling.max_tokens
            dimension_requests = generated * Bounds(1, attempts)
            requests = requests + dimension_requests
            input_tokens = input_tokens + dimension_requests * exactly(per_classification)
            output_tokens = output_tokens + dimension_requests * self.answer_tokens(
                classifier, self.spec.classification.sampling, dimension_taxonomy.allowed_labels)
        classifier_load = self.load(
            "expand", "classifier", classifier, generated, requests, input_tokens, output_tokens,
            f"every generation reclassified: x {plural(len(self.taxonomies), 'dimension')} x 1..{attempts} attempts; "
            f"input: a generation of at most {spec.sampling.max_tokens} tokens")
        return [expander_load, classifier_load]

    def respond(self, samples: Sequence[SamplePrompt], rows: Bounds) -> list[ModelLoad]:
        spec = self.spec.responses
        targets, k, feedback = spec.targets, spec.candidates, spec.feedback_iterations
        first = self.context.prompts.get(RESPOND_TEMPLATE)
        again = self.context.prompts.get(FEEDBACK_TEMPLATE)
        first_requests = [first.render(prompt=s.text, target=t, labels=dict(s.labels)) for s in samples for t in targets]
        feedback_requests = [again.render(prompt=s.text, target=t, labels=dict(s.labels), previous="", score=None,
                                          critique="") for s in samples for t in targets]
        loads = []
        for generator in self.spec.models.generators:
            # Per prompt: one request per target in round 0; a feedback request adds the previous
            # answer (<= max_tokens) and a critique (<= its character cap, >= 1 character a token).
            round_zero = self.mean_tokens(generator, first_requests) * len(targets)
            feedback_round = (self.mean_tokens(generator, feedback_requests) + spec.sampling.max_tokens
                              + CRITIQUE_MAX_CHARS) * len(targets)
            requests = rows * Bounds(len(targets), len(targets) * (1 + feedback))
            loads.append(self.load(
                "respond", "generator", generator, rows, requests,
                rows * Bounds(round_zero, round_zero + feedback * feedback_round),
                requests * self.answer_tokens(generator, spec.sampling.model_copy(update={"n": k})),
                f"{count_text(rows)} prompts x {plural(len(targets), 'target')} x 1..{1 + feedback} rounds "
                f"(feedback while no candidate passes); {plural(k, 'candidate')} per request"))

        model = self.spec.models.judge
        candidates = rows.upper * len(self.spec.models.generators) * len(targets) * k * (1 + feedback)
        rendered = judge_requests(
            [JudgeItem(s.text, t, "", s.labels) for s in samples for t in targets], self.context, attempt=0)
        per_request = self.mean_tokens(model, [r.messages for r in rendered])
        requests = Bounds(0, 2 * candidates)
        choices = SCORE_CHOICES if spec.judge_mode == "choice" else None
        loads.append(self.load(
            "respond", "judge", model, rows, requests,
            requests * Bounds(per_request + 1, per_request + spec.sampling.max_tokens),
            requests * self.answer_tokens(model, spec.judge_sampling, choices),
            f"0 (every candidate fails the rule filters) .. every candidate judged, each retried once; "
            f"input: a candidate of at most {spec.sampling.max_tokens} tokens"))
        return loads

    def rate(self, samples: Sequence[SamplePrompt], rows: Bounds) -> list[ModelLoad]:
        spec = self.spec.responses
        scale = list(spec.rating_scale)
        template = self.context.prompts.get(RATE_TEMPLATE)
        first_dimension = self.spec.dimensions[0].name
        loads = []
        for rater in self.spec.models.raters:
            per_request = self.mean_tokens(rater, [
                template.render(conversation=s.text, domain=s.labels.get(first_dimension, "unknown"), scale=scale)
                for s in samples])
            requests = rows * Bounds(1, 2)
            loads.append(self.load(
                "rate", "rater", rater, rows, requests, requests * exactly(per_request),
                requests * self.answer_tokens(rater, spec.judge_sampling, scale),
                f"{count_text(rows)} conversations x 1..2 attempts (answers outside the scale are asked again)"))
        return loads


def _no_engines(role: str, model_id: str) -> Engine:
    raise RuntimeError(f"planning makes no model calls (asked for {role} {model_id})")


def _planner(spec: DatasetSpec, profile: Profile, tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None,
             throughputs: Mapping[str, float] | None) -> tuple[_Planner, dict[str, str]]:
    effective = apply_profile(spec, profile)
    counters, described = token_counters(effective, profile, tokenizer_count)
    return _Planner(effective, profile, counters, throughputs or {}), described


def representative_labels(taxonomies: Mapping[str, Taxonomy]) -> dict[str, str]:
    """Labels for sample prompts not yet classified: each dimension's longest label (templates
    name the labels, so this errs long)."""
    return {name: max(t.allowed_labels, key=len) for name, t in taxonomies.items()}


def estimate_build(spec: DatasetSpec, profile: Profile, source_rows: int | None, sample_texts: Sequence[str],
                   tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None = None, *,
                   limit: int | None = None, prompts_per_row: float = 1.0,
                   throughputs: Mapping[str, float] | None = None) -> BuildPlan:
    """Requests, tokens, time and cost of building `spec` on `profile`, per stage and model.

    `source_rows` rows become `source_rows x prompts_per_row` prompts (a source with several
    rows per prompt, like DICES, has fewer prompts than rows), at most `limit` (default: the
    profile's). `sample_texts` stand for all prompts: per-request tokens are their mean.
    `tokenizer_count` is one counter for every model or one per spec model id; models
    without one are approximated (see `approximate_token_counter`). `throughputs` are
    measured output tokens per second by engine label, used where the profile has none.
    """
    if not sample_texts:
        raise ValueError("a plan needs at least one sample text to render the templates with")
    planner, described = _planner(spec, profile, tokenizer_count, throughputs)
    limit = limit if limit is not None else profile.limit
    notes = [
        "Bounds hold when engines answer every request; an engine error costs a request and no tokens. "
        "Request-cache hits are counted as work.",
        "Input tokens count message contents; chat-template markup (a few tokens a message) is not counted.",
        f"Time: output tokens / throughput + input tokens / ({PREFILL_SPEEDUP:g} x throughput), stages one after "
        "another. Cost: tokens x the profile's prices; models without prices cost n/a.",
    ]
    if source_rows is not None:
        prompts = round(source_rows * prompts_per_row)
        if limit is not None and prompts > limit:
            prompts = limit
            notes.append(f"limit: the first {limit:,} prompts")
    elif limit is not None:
        prompts = limit
        notes.append(f"source size unknown: planned for the limit, assuming the source has at least {limit:,} prompts")
    else:
        notes.append("source size unknown and no limit: nothing to plan (pass --limit N to plan a bounded build)")
        return BuildPlan(planner.spec.name, profile.name, None, None, (), described, tuple(notes))

    labels = representative_labels(planner.taxonomies)
    samples = [SamplePrompt(text, labels) for text in sample_texts]
    stage_two = stage_two_kind(planner.spec).stage
    stage_two_rows = Bounds(0, prompts + planner.expansion_accepted())
    notes.append(f"{stage_two}: from 0 prompts (Stage I may leave none: required labels, near-duplicates, leakage) "
                 f"to every prompt plus every expansion target ({count_text(stage_two_rows)})")
    loads = [*planner.classify(samples, exactly(prompts)), *planner.expand(samples),
             *planner.stage_loads(stage_two, samples, stage_two_rows)]
    return BuildPlan(planner.spec.name, profile.name, source_rows, prompts, tuple(loads), described, tuple(notes))


def shard_loads(stage: str, rows: pa.Table, spec: DatasetSpec, profile: Profile,
                tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None = None) -> list[ModelLoad]:
    """The loads of one shard of a build stage, over the shard's own prompts (and labels)."""
    planner, _ = _planner(spec, profile, tokenizer_count, None)
    samples = shard_samples(rows, planner.taxonomies)
    if not samples:
        return []
    return planner.stage_loads(stage, samples, exactly(rows.num_rows))


def shard_samples(rows: pa.Table, taxonomies: Mapping[str, Taxonomy]) -> list[SamplePrompt]:
    """Up to SAMPLE_TEXTS evenly spaced prompts of a table, with their labels where classified."""
    step = max(1, math.ceil(rows.num_rows / SAMPLE_TEXTS))
    fallback = representative_labels(taxonomies)
    samples = []
    for row in rows.take(list(range(0, rows.num_rows, step))).to_pylist():
        labels = {name: row.get(f"{name}_label") or fallback[name] for name in taxonomies}
        samples.append(SamplePrompt(row["text"], labels))
    return samples
