"""Kinds of Stage II, one registry: what a spec's `responses.mode` runs and produces.

A kind names its step (a shard step), the spec models it needs, the release tables it
publishes, and what the plan and the benchmark know of it. A fifth kind is one module with
its step and one `register` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.spec import DatasetSpec
from tasks.core import Step
from tasks.stage2.rate import rate_conversations
from tasks.stage2.respond import generate_responses


@dataclass(frozen=True)
class StageTwoKind:
    mode: str  # the spec's responses.mode
    stage: str  # the step's name in reports, checkpoints and the Prefect UI
    step: Step
    # The spec models the step calls, by role, in order of first use.
    models: Callable[[DatasetSpec], dict[str, tuple[str, ...]]]


KINDS: dict[str, StageTwoKind] = {}


def register(kind: StageTwoKind) -> StageTwoKind:
    KINDS[kind.mode] = kind
    return kind


def stage_two_kind(spec: DatasetSpec) -> StageTwoKind:
    try:
        return KINDS[spec.responses.mode]
    except KeyError:
        raise ValueError(f"{spec.name}: responses.mode {spec.responses.mode!r} is not a registered kind "
                         f"of Stage II ({sorted(KINDS)})") from None


def _generators_and_judge(spec: DatasetSpec) -> dict[str, tuple[str, ...]]:
    return {"generator": spec.models.generators, "judge": (spec.models.judge,) if spec.models.judge else ()}


def _raters(spec: DatasetSpec) -> dict[str, tuple[str, ...]]:
    return {"rater": spec.models.raters}


register(StageTwoKind("hhh", "respond", generate_responses, _generators_and_judge))
register(StageTwoKind("aligned_misaligned", "respond", generate_responses, _generators_and_judge))
register(StageTwoKind("raters", "rate", rate_conversations, _raters))
