"""Kinds of Stage II, one registry: everything that depends on a spec's `responses.mode`.

A kind names its step (a shard step), the spec models it calls, the release tables it
publishes, its plan estimate, and the benchmarks a dataset of its kind supports. The
build, the plan, the card and the benchmark ask the registry, never the mode itself: a
fifth kind is one module with its step and release, and one `register` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa

from schemas.spec import DatasetSpec
from tasks.config import ConfigError
from tasks.core import Step
from tasks.release.tables import rating_release, response_release
from tasks.stage2.rate import rate_conversations
from tasks.stage2.respond import generate_responses

# (prompts, side tables by name, spec) -> release config name -> table
Release = Callable[[pa.Table, Mapping[str, pa.Table], DatasetSpec], dict[str, pa.Table]]


@dataclass(frozen=True)
class StageTwoKind:
    mode: str  # the spec's responses.mode
    stage: str  # the step's name in reports, checkpoints and the Prefect UI
    step: Step
    models: Callable[[DatasetSpec], dict[str, tuple[str, ...]]]  # role -> spec models, in order of use
    release: Release
    # The plan's estimate: (planner, sample prompts, row bounds) -> the step's model loads.
    plan: Callable[[Any, Sequence[Any], Any], list[Any]]
    benchmarks: tuple[str, ...] = ()  # benchmark kinds a dataset of this kind supports, the default first
    task_categories: tuple[str, ...] = ("text-generation",)  # of the card, beside text classification


KINDS: dict[str, StageTwoKind] = {}


def register(kind: StageTwoKind) -> StageTwoKind:
    KINDS[kind.mode] = kind
    return kind


def stage_two_kind(spec: DatasetSpec) -> StageTwoKind:
    """The spec's kind, once its models are all named; a clear ConfigError otherwise."""
    kind = KINDS.get(spec.responses.mode)
    if kind is None:
        raise ConfigError(f"{spec.name}: responses.mode {spec.responses.mode!r} is not a kind of Stage II; "
                          f"known: {', '.join(sorted(KINDS))}")
    missing = [role for role, models in kind.models(spec).items() if not models]
    if missing:
        raise ConfigError(f"{spec.name}: responses.mode {kind.mode} needs models for {', '.join(missing)}")
    return kind


def stage_two_models(spec: DatasetSpec) -> list[str]:
    return [model for models in stage_two_kind(spec).models(spec).values() for model in models]


def release_tables(prompts: pa.Table, side: Mapping[str, pa.Table], spec: DatasetSpec) -> dict[str, pa.Table]:
    return stage_two_kind(spec).release(prompts, side, spec)


def _generators_and_judge(spec: DatasetSpec) -> dict[str, tuple[str, ...]]:
    return {"generator": spec.models.generators, "judge": (spec.models.judge,) if spec.models.judge else ()}


def _plan_respond(planner: Any, samples: Sequence[Any], rows: Any) -> list[Any]:
    return planner.respond(samples, rows)


def _plan_rate(planner: Any, samples: Sequence[Any], rows: Any) -> list[Any]:
    return planner.rate(samples, rows)


def _raters(spec: DatasetSpec) -> dict[str, tuple[str, ...]]:
    return {"rater": spec.models.raters}


register(StageTwoKind("hhh", "respond", partial(generate_responses, joint_pass="hhh"), _generators_and_judge,
                      partial(response_release, joint_pass="hhh"), _plan_respond, benchmarks=("hhh",)))
register(StageTwoKind("aligned_misaligned", "respond", generate_responses, _generators_and_judge, response_release,
                      _plan_respond, benchmarks=("detect", "generate")))
register(StageTwoKind("raters", "rate", rate_conversations, _raters, rating_release, _plan_rate, benchmarks=("rate",),
                      task_categories=()))
