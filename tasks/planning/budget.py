"""Budgets: stop a build cleanly before a shard that could overspend.

A `Budget` caps requests, output tokens and money. The build keeps a `Spend` from its
engines' usage (`EngineUsage` deltas, priced by the profile) and, at each shard boundary,
before submitting the next shard, asks `budget.allows(spent, estimate_shard(...))`: the
estimate is the plan's upper bound for that shard (`tasks.planning.plan`, one implementation), so
a shard that starts can never take the build past its budget.

Spend counts what the engines report, request-cache hits included: a budget bounds the
work a build asks for, and cache hits only make the real bill smaller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from schemas.profile import EngineConfig, Profile
from schemas.spec import DatasetSpec
from tasks.engines.base import EngineUsage
from tasks.planning.loads import token_cost
from tasks.planning.plan import shard_loads
from tasks.planning.tokens import TokenCounter


@dataclass
class Spend:
    """Requests, output tokens and money spent (or estimated); money only for priced models."""

    requests: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.requests + other.requests, self.output_tokens + other.output_tokens,
                     self.cost_usd + other.cost_usd)

    def record(self, usage: EngineUsage, engine: EngineConfig) -> None:
        """Add one engine's usage (a delta since the last record), priced by its profile entry."""
        self.requests += usage.requests
        self.output_tokens += usage.completion_tokens
        self.cost_usd += token_cost(engine, usage.prompt_tokens, usage.completion_tokens)


def usage_since(before: EngineUsage | None, after: EngineUsage) -> EngineUsage:
    """What an engine did between two readings of its running totals."""
    return after - (before or EngineUsage())


def spend_between(before: Mapping[str, EngineUsage], after: Mapping[str, EngineUsage],
                  roles: Mapping[tuple[str, str], str], profile: Profile) -> Spend:
    """The spend between two `EnginePool.usage_by_engine()` readings; each engine is priced by
    the profile entry of a spec model that ran on it (`EnginePool.roles()`)."""
    configs = {engine: profile.engine_for(spec_model) for (_, spec_model), engine in roles.items()}
    spend = Spend()
    for engine, usage in after.items():
        spend.record(usage_since(before.get(engine), usage), configs[engine])
    return spend


@dataclass(frozen=True)
class Budget:
    """Caps for one build; None leaves a quantity uncapped."""

    max_requests: int | None = None
    max_output_tokens: int | None = None
    max_cost_usd: float | None = None

    def allows(self, spent: Spend, next_shard_estimate: Spend) -> bool:
        """True when spending the next shard's estimate on top of `spent` stays within every cap."""
        after = spent + next_shard_estimate
        caps = ((self.max_requests, after.requests), (self.max_output_tokens, after.output_tokens),
                (self.max_cost_usd, after.cost_usd))
        return all(cap is None or value <= cap for cap, value in caps)

    def describe(self) -> str:
        caps = [f"{self.max_requests:,} requests" if self.max_requests is not None else "",
                f"{self.max_output_tokens:,} output tokens" if self.max_output_tokens is not None else "",
                f"${self.max_cost_usd:,.2f}" if self.max_cost_usd is not None else ""]
        return ", ".join(cap for cap in caps if cap) or "unlimited"

    def check(self, spent: Spend, next_shard_estimate: Spend, where: str) -> None:
        """Raise BudgetExceeded unless the budget allows the next shard (`where` names it)."""
        if not self.allows(spent, next_shard_estimate):
            raise BudgetExceeded(self, spent, next_shard_estimate, where)


class BudgetExceeded(RuntimeError):
    """The next shard could exceed the budget; the build stopped before submitting it."""

    def __init__(self, budget: Budget, spent: Spend, next_shard_estimate: Spend, where: str) -> None:
        self.budget = budget
        self.spent = spent
        self.next_shard_estimate = next_shard_estimate
        self.where = where
        super().__init__(f"budget stop before {where}: spent {_describe(spent)}; the next shard could add up to "
                         f"{_describe(next_shard_estimate)} (budget: {budget.describe()})")


def _describe(spend: Spend) -> str:
    return f"{spend.requests:,} requests, {spend.output_tokens:,} output tokens, ${spend.cost_usd:,.2f}"


def estimate_shard(stage: str, rows: pa.Table, spec: DatasetSpec, profile: Profile,
                   tokenizer_count: TokenCounter | Mapping[str, TokenCounter] | None = None) -> Spend:
    """Upper bound of what one shard of `stage` (classify, expand, respond, rate) can spend:
    the plan's upper bounds over the shard's own prompts; money only for priced models."""
    loads = shard_loads(stage, rows, spec, profile, tokenizer_count)
    return Spend(requests=math.ceil(sum(load.requests.upper for load in loads)),
                 output_tokens=math.ceil(sum(load.output_tokens.upper for load in loads)),
                 cost_usd=sum(load.cost_usd.upper for load in loads if load.cost_usd is not None))
