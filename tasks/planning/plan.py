"""Plan before you pay: what a build will ask of each model, before it asks.

`estimate_build` turns a spec, a profile and the source's size into requests, input and
output tokens per stage and model, each as [lower, upper] bounds with the assumption that
makes them bounds; time and money follow from the profile's throughput and prices only.
Token counts come from the real templates (`prompts/`) rendered the way the steps render
them, over real source texts, counted by the model's tokenizer when one loads offline.

The estimate itself is pure (no model calls, no network). The helpers below it do the
cheap I/O a plan needs: counting source rows without loading the source, loading
tokenizers offline, and measuring a model's throughput once per machine (`calibrate`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec
from schemas.taxonomy import Taxonomy
from tasks.stage1.classify import classification_requests
from tasks.config import PROJECT_ROOT, PROMPTS_DIR, alignforge_home, apply_profile, taxonomies_for
from tasks.core import StepContext
from tasks.engines.base import ChatRequest, Engine, Message, SamplingParams
from tasks.stage1.expand import TEMPLATE as EXPAND_TEMPLATE
from tasks.stage2.judge import CRITIQUE_MAX_CHARS, SCORE_CHOICES, JudgeItem, judge_requests
from tasks.prompts import PromptLibrary
from tasks.stage2.rate import TEMPLATE as RATE_TEMPLATE
from tasks.stage2.respond import FEEDBACK_TEMPLATE, TEMPLATE as RESPOND_TEMPLATE
from tasks.stage1.source_files import FORMAT_BY_SUFFIX, SourceUnavailable, find_files
from tasks.stage1.sources import how_to_point, is_hub_id, load_source, real_path

TokenCounter = Callable[[str], int]

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text under BPE tokenizers
# Prompt processing is batched and parallel, decoding is one token at a time per sequence:
# prefill is assumed this many times faster than the measured decoding throughput.
PREFILL_SPEEDUP = 10.0
# Backends that answer a closed choice with one of the labels (scored by log-likelihood),
# so the answer's length is a label's tokens plus the end-of-turn token.
CHOICE_SCORING_BACKENDS = ("transformers", "vllm")
STAGE_TWO_STAGES = {"hhh": "respond", "aligned_misaligned": "respond", "raters": "rate"}
PLAN_STAGES = ("classify", "expand", "respond", "rate")
CALIBRATION_FILE = "calibration.json"
CALIBRATION_PROMPT = "Describe a festival you know well, in a few sentences."
SAMPLE_TEXTS = 32  # prompts rendered per template: a stable mean at a bounded rendering cost


@dataclass(frozen=True)
class Bounds:
    """A non-negative quantity known to lie in [lower, upper] under the stated assumptions."""

    lower: float
    upper: float

    def __add__(self, other: Bounds) -> Bounds:
        return Bounds(self.lower + other.lower, self.upper + other.upper)

    def __mul__(self, other: Bounds) -> Bounds:
        return Bounds(self.lower * other.lower, self.upper * other.upper)


def exactly(value: float) -> Bounds:
    return Bounds(value, value)


NONE = exactly(0)


@dataclass(frozen=True)
class SamplePrompt:
    """A prompt as the templates see it: its text and its label per dimension."""

    text: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ModelLoad:
    """What one stage asks of one model in one role."""

    stage: str
    role: str
    spec_model: str
    engine: str
    rows: Bounds  # prompts (classify, respond, rate) or generations (expand) the stage works on
    requests: Bounds
    input_tokens: Bounds
    output_tokens: Bounds
    seconds: Bounds | None  # None: the model has no throughput (profile or calibration)
    cost_usd: Bounds | None  # None: the profile gives this model no prices
    assumption: str


@dataclass(frozen=True)
class LoadTotal:
    """Several loads summed; time and cost over the models that have them."""

    requests: Bounds
    input_tokens: Bounds
    output_tokens: Bounds
    seconds: Bounds | None
    cost_usd: Bounds | None
    untimed: tuple[str, ...]  # engines without a throughput
    unpriced: tuple[str, ...]  # engines without prices


@dataclass(frozen=True)
class BuildPlan:
    dataset: str
    profile: str
    source_rows: int | None
    prompts: int | None  # prompts entering classification; None when the source size is unknown
    loads: tuple[ModelLoad, ...]
    token_counting: Mapping[str, str]  # spec model -> how its tokens were counted
    notes: tuple[str, ...]

    def total(self, loads: Sequence[ModelLoad] | None = None) -> LoadTotal:
        return total_of(self.loads if loads is None else loads)

    def by_model(self) -> dict[tuple[str, str], LoadTotal]:
        """Totals per (spec model, engine), in the order the build first uses them."""
        groups: dict[tuple[str, str], list[ModelLoad]] = {}
        for load in self.loads:
            groups.setdefault((load.spec_model, load.engine), []).append(load)
        return {key: total_of(loads) for key, loads in groups.items()}


def total_of(loads: Sequence[ModelLoad]) -> LoadTotal:
    def summed(values: list[Bounds]) -> Bounds:
        total = NONE
        for value in values:
            total = total + value
        return total

    timed = [load.seconds for load in loads if load.seconds is not None]
    priced = [load.cost_usd for load in loads if load.cost_usd is not None]
    return LoadTotal(
        requests=summed([load.requests for load in loads]), input_tokens=summed([load.input_tokens for load in loads]),
        output_tokens=summed([load.output_tokens for load in loads]),
        seconds=summed(timed) if timed else None, cost_usd=summed(priced) if priced else None,
        untimed=tuple(dict.fromkeys(load.engine for load in loads if load.seconds is None)),
        unpriced=tuple(dict.fromkeys(load.engine for load in loads if load.cost_usd is None)),
    )


def engine_label(config: EngineConfig, spec_model: str) -> str:
    """How the engine pool and the manifest name an engine: backend and resolved model."""
    return f"{config.backend}:{config.resolved_model(spec_model)}"


def is_priced(config: EngineConfig) -> bool:
    return config.usd_per_million_input_tokens is not None or config.usd_per_million_output_tokens is not None


def token_cost(config: EngineConfig, input_tokens: float, output_tokens: float) -> float:
    """USD for tokens at the profile's prices (the only prices there are); a price the profile
    leaves out counts as free."""
    return (input_tokens * (config.usd_per_million_input_tokens or 0.0)
            + output_tokens * (config.usd_per_million_output_tokens or 0.0)) / 1e6


def approximate_token_counter(config: EngineConfig) -> tuple[TokenCounter, str]:
    """The counter used when no tokenizer is given: the scripted backend's own rule (one token
    per word), otherwise characters / CHARS_PER_TOKEN."""
    if config.backend == "scripted":
        return (lambda text: len(text.split())), "words (the scripted backend's tokens)"
    return (lambda text: math.ceil(len(text) / CHARS_PER_TOKEN)), f"approximation: characters / {CHARS_PER_TOKEN}"


def spec_models(spec: DatasetSpec) -> list[str]:
    """Every model id the spec's build uses, in order of first use."""
    models = spec.models
    stage_two = [*models.generators, models.judge] if spec.responses.mode != "raters" else list(models.raters)
    return list(dict.fromkeys(m for m in (models.classifier, models.expander, *stage_two) if m))


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
        if stage == "respond":
            return self.respond(samples, rows)
        if stage == "rate":
            return self.rate(samples, rows)
        raise ValueError(f"no plan for stage {stage!r}; stages: {', '.join(PLAN_STAGES)}")

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
        assumption = (f"{_count(rows)} prompts x {_plural(len(self.taxonomies), 'dimension')} x 1..{attempts} attempts "
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
            f"0 (every domain at target) .. {_plural(len(self.expansion_domains()), 'domain')} x "
            f"ceil({spec.target_per_domain} x {spec.oversample}) x {_plural(spec.max_rounds, 'round')}; "
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
            f"every generation reclassified: x {_plural(len(self.taxonomies), 'dimension')} x 1..{attempts} attempts; "
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
                f"{_count(rows)} prompts x {_plural(len(targets), 'target')} x 1..{1 + feedback} rounds "
                f"(feedback while no candidate passes); {_plural(k, 'candidate')} per request"))

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
                f"{_count(rows)} conversations x 1..2 attempts (answers outside the scale are asked again)"))
        return loads


def _no_engines(role: str, model_id: str) -> Engine:
    raise RuntimeError(f"planning makes no model calls (asked for {role} {model_id})")


def _count(bounds: Bounds) -> str:
    if bounds.lower == bounds.upper:
        return _number(bounds.upper)
    return f"{_number(bounds.lower)}..{_number(bounds.upper)}"


def _number(value: float) -> str:
    return f"{math.ceil(value):,}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _counters(spec: DatasetSpec, profile: Profile,
              tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None
              ) -> tuple[dict[str, TokenCounter], dict[str, str]]:
    """A counter and its description per spec model: the given one(s), else the approximation."""
    counters, described = {}, {}
    for model in spec_models(spec):
        given = tokenizer_count.get(model) if isinstance(tokenizer_count, Mapping) else tokenizer_count
        if given is not None:
            counters[model], described[model] = given, "tokenizer"
        else:
            counters[model], described[model] = approximate_token_counter(profile.engine_for(model))
    return counters, described


def _planner(spec: DatasetSpec, profile: Profile, tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None,
             throughputs: Mapping[str, float] | None) -> tuple[_Planner, dict[str, str]]:
    effective = apply_profile(spec, profile)
    counters, described = _counters(effective, profile, tokenizer_count)
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
    stage_two = STAGE_TWO_STAGES[planner.spec.responses.mode]
    stage_two_rows = Bounds(0, prompts + planner.expansion_accepted())
    notes.append(f"{stage_two}: from 0 prompts (Stage I may leave none: required labels, near-duplicates, leakage) "
                 f"to every prompt plus every expansion target ({_count(stage_two_rows)})")
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


# -- rendering --------------------------------------------------------------------------------


def plan_totals(plan: BuildPlan) -> dict[str, Any]:
    """The plan's totals as plain data (JSON-able), each as [lower, upper]."""
    total = plan.total()

    def whole(bounds: Bounds) -> list[int]:
        return [math.ceil(bounds.lower), math.ceil(bounds.upper)]

    return {
        "dataset": plan.dataset, "profile": plan.profile, "source_rows": plan.source_rows, "prompts": plan.prompts,
        "requests": whole(total.requests), "input_tokens": whole(total.input_tokens),
        "output_tokens": whole(total.output_tokens),
        "seconds": [round(total.seconds.lower, 1), round(total.seconds.upper, 1)] if total.seconds else None,
        "cost_usd": [round(total.cost_usd.lower, 4), round(total.cost_usd.upper, 4)] if total.cost_usd else None,
        "untimed": list(total.untimed), "unpriced": list(total.unpriced),
    }


PLAN_COLUMNS = ("stage / role", "model / engine", "rows", "requests", "input tokens", "output tokens", "time",
                "cost (USD)")


def plan_rows(plan: BuildPlan) -> list[list[str]]:
    """The plan as table rows: one per load, one total per model, one grand total."""
    rows = [[f"{load.stage} /\n{load.role}", f"{load.spec_model}\n({load.engine})", _range(load.rows),
             _range(load.requests), _range(load.input_tokens), _range(load.output_tokens), _duration(load.seconds),
             _money(load.cost_usd)]
            for load in plan.loads]
    for (model, engine), total in plan.by_model().items():
        rows.append(["total", f"{model}\n({engine})", "", *_total_cells(total)])
    if plan.loads:
        rows.append(["total", "all models", "", *_total_cells(plan.total())])
    return rows


def render_plan(plan: BuildPlan) -> Table:
    """The plan as a rich table for the terminal (the notes go in the caption)."""
    table = Table(title=_title(plan), caption="\n".join(_footer(plan)), caption_justify="left")
    for name in PLAN_COLUMNS:
        # Numbers stay on one line; the long model names fold instead.
        wraps = name in ("stage / role", "model / engine")
        table.add_column(name, no_wrap=not wraps, overflow="fold", min_width=20 if name == "model / engine" else None)
    for row in plan_rows(plan):
        table.add_row(*row, style="bold" if row[0] == "total" else None)
    return table


def render_plan_markdown(plan: BuildPlan) -> str:
    """The plan as markdown (a Prefect artifact): table, assumptions per load, notes."""
    lines = [f"# {_title(plan)}", "", "| " + " | ".join(PLAN_COLUMNS) + " |",
             "|" + "---|" * len(PLAN_COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in row) + " |"
              for row in plan_rows(plan)]
    lines += ["", "## Assumptions", ""]
    lines += [f"- **{load.stage} / {load.role} / {load.spec_model}**: {load.assumption}" for load in plan.loads]
    lines += [f"- {line}" for line in _footer(plan)]
    return "\n".join(lines) + "\n"


def _title(plan: BuildPlan) -> str:
    rows = f"{plan.source_rows:,} source rows" if plan.source_rows is not None else "source rows unknown"
    prompts = f"{plan.prompts:,} prompts" if plan.prompts is not None else "prompts unknown"
    return f"Plan: {plan.dataset} on profile {plan.profile} ({rows}, {prompts})"


def _footer(plan: BuildPlan) -> list[str]:
    counting = ", ".join(f"{model}: {how}" for model, how in plan.token_counting.items())
    total = plan.total()
    lines = [*plan.notes, f"Tokens counted by {counting}."]
    if total.untimed:
        lines.append(f"Time n/a (no output_tokens_per_second in the profile, none calibrated): {', '.join(total.untimed)}.")
    if total.unpriced:
        lines.append(f"Cost n/a (no prices in the profile): {', '.join(total.unpriced)}.")
    return lines


def _total_cells(total: LoadTotal) -> list[str]:
    # A total over some models only says so; the footer names the others.
    time_cell = _duration(total.seconds) + (" + n/a" if total.untimed and total.seconds else "")
    cost_cell = _money(total.cost_usd) + (" + n/a" if total.unpriced and total.cost_usd else "")
    return [_range(total.requests), _range(total.input_tokens), _range(total.output_tokens), time_cell, cost_cell]


def _span(bounds: Bounds, show: Callable[[float], str]) -> str:
    """One value when the bounds agree, "≤ upper" from zero, else "lower – upper"."""
    lower, upper = show(bounds.lower), show(bounds.upper)
    if lower == upper:
        return upper
    return f"≤ {upper}" if bounds.lower == 0 else f"{lower} – {upper}"


def _range(bounds: Bounds) -> str:
    return _span(bounds, _number)


def _duration(seconds: Bounds | None) -> str:
    return "n/a" if seconds is None else _span(seconds, _human_seconds)


def _human_seconds(value: float) -> str:
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _money(cost: Bounds | None) -> str:
    return "n/a" if cost is None else _span(cost, lambda value: f"${value:,.2f}")


# -- inputs: source size, sample texts, tokenizers -------------------------------------------------


@dataclass(frozen=True)
class SourceRows:
    rows: int | None  # None: unknown without loading (or downloading) the source
    how: str


def count_source_rows(spec: DatasetSpec, *, real: bool, project_root: Path = PROJECT_ROOT,
                      home: Path | None = None, location: str | None = None) -> SourceRows:
    """Rows of the source the build reads (`location`: the build's `--source`), without loading
    it: lines or CSV records streamed, Parquet metadata, or a hub dataset's cached
    `dataset_info.json`."""
    source = spec.source
    if location is not None:
        if is_hub_id(location):
            return _hub_rows(location, None, "train")
        return _location_rows(spec, Path(location).expanduser())
    if not real:
        path = project_root / source.sample
        return SourceRows(_file_rows(path, source.format), f"{source.format} rows of {source.sample}")
    if source.real.hub_id:
        return _hub_rows(source.real.hub_id, source.real.config, source.real.split)
    if source.real.path:
        return _location_rows(spec, real_path(spec, home or alignforge_home()))
    return SourceRows(None, f"unknown: {source.real.url} is remote and counting it needs a download")


def _location_rows(spec: DatasetSpec, path: Path) -> SourceRows:
    try:
        _, files, _ = find_files(path, spec.source.format)
    except SourceUnavailable:
        return SourceRows(None, f"unknown: nothing at {path} yet ({how_to_point(spec)})")
    rows = sum(_file_rows(file, FORMAT_BY_SUFFIX.get(file.suffix.lower(), spec.source.format)) for file in files)
    return SourceRows(rows, f"rows of the {len(files)} file(s) at {path}")


def _file_rows(path: Path, kind: str) -> int:
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if kind == "jsonl":
            return sum(1 for line in handle if line.strip())  # the reader skips blank lines
        if kind == "json":
            document = json.load(handle)
            return len(document if isinstance(document, list) else next(
                (v for v in document.values() if isinstance(v, list)), []))
        # Records, not lines: a quoted field may hold newlines. Blank lines are skipped like csv.DictReader does.
        records = csv.reader(handle, delimiter="\t" if kind == "tsv" else ",")
        return max(0, sum(1 for record in records if record) - 1)


def _hub_rows(hub_id: str, config: str | None, split: str) -> SourceRows:
    """Rows of a hub split from the `datasets` cache when it was loaded on this machine
    (looking it up on the hub would mean network calls and retries)."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    namespace, _, name = hub_id.rpartition("/")
    folder = f"{namespace}___{camelcase_to_snakecase(name)}" if namespace else camelcase_to_snakecase(name)
    infos = sorted(Path(datasets.config.HF_DATASETS_CACHE).glob(f"{folder}/{config or 'default'}/*/*/dataset_info.json"),
                   key=lambda p: p.stat().st_mtime)
    for info in reversed(infos):
        splits = json.loads(info.read_text(encoding="utf-8")).get("splits") or {}
        if split in splits:
            return SourceRows(int(splits[split]["num_examples"]), f"datasets cache of {hub_id} ({split})")
    return SourceRows(None, f"unknown: {hub_id} is not in this machine's datasets cache (it is counted once loaded)")


@dataclass(frozen=True)
class SourceSample:
    texts: list[str]
    prompts_per_row: float
    how: str


def sample_prompts(spec: DatasetSpec, *, real: bool, limit: int | None, project_root: Path = PROJECT_ROOT,
                   size: int = SAMPLE_TEXTS, location: str | None = None) -> SourceSample:
    """Texts to render templates with, and prompts per source row, from the bundled sample
    (small, loaded whole); for a real source the sample stands in for it. A build's `--source`
    (`location`) is read itself: its layout may not be the sample's."""
    loaded = load_source(spec, project_root, real=False, location=location)
    texts = loaded.prompts["text"].to_pylist()[:min(size, limit or size)]  # the build takes the first prompts
    ratio = loaded.prompts.num_rows / loaded.rows_read if loaded.rows_read else 1.0
    if location is not None:
        how = f"{len(texts)} prompts of {location}"
    else:
        how = f"{len(texts)} prompts of {spec.source.sample}" + (" standing in for the real source" if real else "")
    return SourceSample(texts, ratio, how)


# SmolLM2's transformers export; tasks.engines.packaged.smollm2_folder writes it on first load
# (~18 s), which a plan does not trigger: without it, its tokens are approximated.
SMOLLM2_EXPORT = Path("models") / "smollm2-135m-instruct"


def load_token_counters(spec: DatasetSpec, profile: Profile) -> dict[str, TokenCounter]:
    """Counters for the spec's models whose tokenizer loads without network access."""
    counters: dict[str, TokenCounter] = {}
    by_engine: dict[str, TokenCounter | None] = {}
    for model in spec_models(spec):
        config = profile.engine_for(model)
        label = engine_label(config, model)
        if label not in by_engine:
            by_engine[label] = _offline_tokenizer(config, model)
        if by_engine[label] is not None:
            counters[model] = by_engine[label]
    return counters


def _offline_tokenizer(config: EngineConfig, spec_model: str) -> TokenCounter | None:
    if config.backend not in ("transformers", "vllm", "embedding"):
        return None
    source, revision = config.resolved_model(spec_model), config.revision
    try:
        if source == "packaged:smollm2":
            source, revision = str(alignforge_home() / SMOLLM2_EXPORT), None
        elif source == "packaged:minilm":
            from tasks.engines.packaged import minilm_path

            source, revision = str(minilm_path()), None
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, local_files_only=True)
    except (OSError, ValueError, ImportError) as error:
        logging.getLogger("alignforge").info("no offline tokenizer for %s (%s): tokens approximated", source, error)
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -- calibration ------------------------------------------------------------------------------------


def machine_id() -> str:
    """Names this machine in the calibration cache (throughput depends on the hardware)."""
    return f"{platform.node()}/{platform.machine()}/{os.cpu_count()}cpu"


def calibration_path(home: Path | None = None) -> Path:
    return (home or alignforge_home()) / CALIBRATION_FILE


def cached_throughputs(home: Path | None = None) -> dict[str, float]:
    """Output tokens per second measured on this machine, by engine label."""
    path = calibration_path(home)
    if not path.is_file():
        return {}
    measured = json.loads(path.read_text(encoding="utf-8")).get(machine_id(), {})
    return {label: entry["output_tokens_per_second"] for label, entry in measured.items()}


def calibrate(engine: Engine, n_requests: int = 4, max_tokens: int = 32, home: Path | None = None) -> float:
    """Measure `engine`'s output tokens per second on one batch of `n_requests` short generations
    and cache it for (engine, this machine). Pass an engine without the request cache."""
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    # A first request pays one-off set-up (kernels, lazy allocation) that a build pays once.
    engine.generate([ChatRequest(messages=(Message(role="user", content=CALIBRATION_PROMPT),),
                                 sampling=sampling.model_copy(update={"max_tokens": 1}))])
    requests = [ChatRequest(messages=(Message(role="user", content=f"{CALIBRATION_PROMPT} ({index + 1})"),),
                            sampling=sampling) for index in range(n_requests)]
    started = time.perf_counter()
    completions = engine.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for c in completions)
    if tokens == 0:
        errors = "; ".join(c.error for c in completions if c.error) or "empty answers"
        raise RuntimeError(f"calibrating {engine.identity}: no tokens generated ({errors})")
    rate = tokens / seconds
    _store_calibration(calibration_path(home), f"{engine.backend}:{engine.model_id}",
                       {"output_tokens_per_second": rate, "requests": n_requests, "max_tokens": max_tokens,
                        "tokens": tokens, "seconds": seconds, "measured_at": datetime.now(timezone.utc).isoformat()})
    return rate


def _store_calibration(path: Path, label: str, entry: dict[str, float | int | str]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.setdefault(machine_id(), {})[label] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a sibling file and rename: a crash never leaves half a cache behind.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    Path(handle.name).replace(path)
