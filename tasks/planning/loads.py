"""What a plan is made of: bounds, the load one stage puts on one model, their totals,
and what a load costs at the profile's prices. Pure values, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas.profile import EngineConfig


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


def count_text(bounds: Bounds) -> str:
    if bounds.lower == bounds.upper:
        return number_text(bounds.upper)
    return f"{number_text(bounds.lower)}..{number_text(bounds.upper)}"


def number_text(value: float) -> str:
    return f"{math.ceil(value):,}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
