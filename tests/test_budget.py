"""Budgets: spend from engine usage priced by the profile, caps that hold to the token, and a
shard loop that stops before a shard whose upper bound could take it past the budget."""

from __future__ import annotations

import dataclasses
import logging
import pickle

import pytest

from schemas.profile import EngineConfig, Profile
from tasks.planning.budget import Budget, BudgetExceeded, Spend, estimate_shard, spend_between, usage_since
from tasks.stage1.classify import classify_shard
from tasks.config import PROJECT_ROOT, PROMPTS_DIR, apply_profile, load_spec, taxonomies_for
from tasks.core import StepContext
from tasks.engines.base import ChatRequest, EngineUsage, Message
from tasks.engines.pool import EnginePool, add_usage
from tasks.engines.scripted import ScriptedEngine
from tasks.prompts import PromptLibrary
from tasks.stage1.sources import load_source

CLASSIFIER = "mistralai/Mistral-7B-Instruct-v0.3"
PROFILE = Profile(name="budget-test", description="scripted classifier, four shards of eight prompts",
                  default_engine=EngineConfig(backend="scripted"), limit=32, shard_size=8,
                  models={CLASSIFIER: EngineConfig(backend="scripted", usd_per_million_input_tokens=3.0,
                                                   usd_per_million_output_tokens=15.0)})


def test_budget_allows_up_to_each_cap_exactly() -> None:
    budget = Budget(max_requests=100, max_output_tokens=1000, max_cost_usd=1.0)
    assert budget.allows(Spend(60, 500, 0.5), Spend(40, 500, 0.5))
    assert not budget.allows(Spend(60, 500, 0.5), Spend(41, 0, 0.0))
    assert not budget.allows(Spend(0, 999, 0.0), Spend(0, 2, 0.0))
    assert not budget.allows(Spend(0, 0, 0.75), Spend(0, 0, 0.26))
    assert Budget().allows(Spend(10**9, 10**9, 1e9), Spend(1, 1, 1.0))


def test_check_raises_with_what_was_spent() -> None:
    Budget(max_requests=11).check(Spend(8, 80), Spend(3, 30), "classify shard 2/5")
    with pytest.raises(BudgetExceeded) as raised:
        Budget(max_requests=10).check(Spend(8, 80), Spend(3, 30), "classify shard 2/5")
    assert raised.value.spent == Spend(8, 80) and raised.value.next_shard_estimate == Spend(3, 30)
    assert "classify shard 2/5" in str(raised.value) and "10 requests" in str(raised.value)


def test_spend_records_usage_deltas_at_the_profiles_prices() -> None:
    priced = EngineConfig(backend="openai", base_url="http://127.0.0.1:9", usd_per_million_input_tokens=2.5,
                          usd_per_million_output_tokens=10.0)
    before = EngineUsage(requests=2, prompt_tokens=100, completion_tokens=10)
    after = EngineUsage(requests=5, prompt_tokens=400_100, completion_tokens=100_010)
    spend = Spend()
    spend.record(usage_since(before, after), priced)
    assert spend == Spend(requests=3, output_tokens=100_000, cost_usd=pytest.approx(2.0))
    spend.record(EngineUsage(requests=1, prompt_tokens=10, completion_tokens=5), EngineConfig(backend="vllm"))
    assert spend == Spend(requests=4, output_tokens=100_005, cost_usd=pytest.approx(2.0))  # unpriced: no money


def test_spend_between_two_readings_of_an_engine_pool() -> None:
    dollar_a_token = EngineConfig(backend="scripted", scripted_answers={"": "Yes"}, usd_per_million_input_tokens=1e6,
                                  usd_per_million_output_tokens=2e6)
    profile = Profile(name="pool", description="one priced rater",
                      default_engine=EngineConfig(backend="scripted", scripted_answers={"": "No way"}),
                      models={"gpt-4o": dollar_a_token})
    pool = EnginePool(profile, cache_path=None)
    request = ChatRequest(messages=(Message(role="user", content="is this unsafe"),))
    pool("rater", "gpt-4o").generate([request])
    before = pool.usage_by_engine()
    pool("rater", "gpt-4o").generate([request, request])
    pool("rater", "google/gemma-7b-it").generate([request])
    spend = spend_between(before, pool.usage_by_engine(), pool.roles(), profile)
    # gpt-4o: 2 requests x (3 prompt tokens x $1 + 1 answer token x $2); gemma: unpriced, 2 answer tokens.
    assert spend == Spend(requests=3, output_tokens=4, cost_usd=pytest.approx(10.0))


def test_a_pickled_pool_reports_its_own_usage_since_a_reading() -> None:
    """What a Dask worker's copy of the pool does comes back as a PoolUsage the build can tell
    from its own (a new pool_id), with the roles needed to price it, also after the copy has
    released its engines."""
    profile = Profile(name="pool", description="scripted", default_engine=EngineConfig(
        backend="scripted", scripted_answers={"": "Yes"}))
    pool = EnginePool(profile, cache_path=None)
    request = ChatRequest(messages=(Message(role="user", content="is this unsafe"),))
    pool("rater", "gpt-4o").generate([request])
    worker_copy = pickle.loads(pickle.dumps(pool))
    before = worker_copy.usage_by_engine()
    assert before == {}  # the copy holds configuration, not engines or their totals
    worker_copy("rater", "gpt-4o").generate([request, request])
    assert worker_copy.is_copy and not pool.is_copy
    worker_copy.release()  # what a shard does with a copy's models before it returns
    shard = worker_copy.usage_since(before)
    assert shard.pool_id != pool.pool_id
    assert [u.requests for u in shard.usage.values()] == [2] and shard.roles == pool.roles()
    assert add_usage(pool.usage_by_engine(), shard.usage)[next(iter(shard.usage))].requests == 3


def classify_within(budget: Budget) -> tuple[int, Spend, list[Spend]]:
    """The build's shard loop for classification: estimate, ask the budget, run, record."""
    spec = apply_profile(load_spec("savacu"), PROFILE)
    classifier = ScriptedEngine(lambda request: request.choices[0], CLASSIFIER)  # usable: one attempt each
    context = StepContext(spec=spec, profile=PROFILE, taxonomies=taxonomies_for(spec),
                          prompts=PromptLibrary(PROMPTS_DIR), engines=lambda role, model: classifier,
                          logger=logging.getLogger("test"))
    prompts = load_source(spec, PROJECT_ROOT, real=False, limit=PROFILE.limit).prompts
    shards = [prompts.slice(offset, spec.shard_size) for offset in range(0, prompts.num_rows, spec.shard_size)]
    spent, ran, estimates = Spend(), 0, []
    for shard in shards:
        estimate = estimate_shard("classify", shard, spec, PROFILE)
        if not budget.allows(spent, estimate):
            break
        before = dataclasses.replace(classifier.usage)
        classify_shard(shard, context)
        shard_spend = Spend()
        shard_spend.record(usage_since(before, classifier.usage), PROFILE.engine_for(CLASSIFIER))
        assert shard_spend.requests <= estimate.requests and shard_spend.cost_usd <= estimate.cost_usd
        spent, ran = spent + shard_spend, ran + 1
        estimates.append(estimate)
    return ran, spent, estimates


def test_shard_loop_stops_before_the_shard_that_could_exceed_the_budget() -> None:
    # Per shard: 8 prompts x 3 dimensions, 24 requests spent; the bound allows a retry each: 48.
    assert classify_within(Budget(max_requests=3 * 24 + 48))[0] == 4
    ran, spent, _ = classify_within(Budget(max_requests=3 * 24 + 47))
    assert ran == 3 and spent.requests == 72  # the fourth shard would have fit, but could have overrun


def test_shard_loop_keeps_a_money_budget() -> None:
    _, _, estimates = classify_within(Budget())
    cap = estimates[0].cost_usd + estimates[1].cost_usd
    ran, spent, _ = classify_within(Budget(max_cost_usd=cap))
    assert 2 <= ran < 4 and spent.cost_usd <= cap
    assert not Budget(max_cost_usd=cap).allows(spent, estimates[ran])
