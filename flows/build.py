"""The build flow: one pipeline, driven by a dataset spec, in the papers' order.

Stage I (queries): load the source, reclassify into the taxonomy, SimHash near-duplicate
removal, expand low-resource domains, split with a leakage check. Stage II (responses):
the spec's kind of Stage II (two-stage rejection sampling, or LLMs as raters). Then the
release tables, their invariants, and an atomic publish of the version. Every step is a
named task run (`flows/steps.py`); this module only says which step comes when.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows import artifacts
from flows.build_run import BuildRun
from flows.plan import make_plan
from flows.publish import publish
from flows.steps import StepRunner, in_task_run, load_task
from tasks.config import PROJECT_ROOT, load_profile
from tasks.dedup.near_duplicates import Fingerprinter, deduplicate
from tasks.planning.budget import Budget, BudgetExceeded
from tasks.planning.render import plan_totals
from tasks.release.checkpoint import work_folder_lock
from tasks.stage1.classify import classify_shard
from tasks.stage1.expand import expand_domains
from tasks.stage1.split import HeldOut, split_prompts
from tasks.kinds import stage_two_kind
from tasks.stopping import stop_on_signals


def build(run: BuildRun, rebuild: bool) -> dict[str, Any]:
    """The papers' method, step by step."""
    started = time.perf_counter()
    # Stage I, query construction: the source prompts...
    source, load_report = in_task_run(load_task, run.spec.name, run.spec, run.context.profile.source == "real",
                                      run.limit, run.source_location, run.home)
    key = run.content_key(source.fingerprint)
    existing = run.store.find_version(run.spec.name, key)
    # Without the cache nothing finished earlier is reused: no version, no shard, no request.
    if existing and not rebuild and run.reuse_cache:
        run.context.logger.info("%s: inputs unchanged, version %s already published", run.spec.name, existing)
        return {"dataset": run.spec.name, "version": existing, "path": str(run.store.path(run.spec.name, existing)),
                "reused": True}
    steps = StepRunner(run, run.checkpoints(key))
    if not run.reuse_cache:
        steps.checkpoints.clear()
    plan = steps.checkpoints.load_value("plan") or plan_totals(make_plan(run.spec_name, run.profile_name, run.limit,
                                                                         home=run.home,
                                                                         source_location=run.source_location))
    steps.checkpoints.save_value("plan", plan)
    steps.record(load_report, source.step_result())
    # ...reclassified into the taxonomy by the instruct model,
    prompts = steps.shards("classify", classify_shard, source.prompts)
    # near-duplicates removed by SimHash (one IDF table for the corpus and all later prompts),
    run.context.fingerprinter = Fingerprinter.fit(prompts["text"].to_pylist(), run.spec.dedup)
    prompts = steps.whole("dedup", deduplicate, prompts)
    # low-resource domains expanded by generation,
    prompts = steps.whole("expand", expand_domains, prompts, uses_models=True)
    # and split, train items that leak into evaluation removed.
    prompts = steps.whole("split", partial(split_prompts, heldout=heldout_set(run)), prompts)
    # Stage II: responses by two-stage rejection sampling, or LLMs as safety raters.
    kind = stage_two_kind(run.spec)
    prompts = steps.shards(kind.stage, kind.step, prompts)
    return publish(run, key, source, prompts, steps, plan, started)


def heldout_set(run: BuildRun) -> HeldOut | None:
    if not run.spec.splits.heldout:
        return None
    path = PROJECT_ROOT / run.spec.splits.heldout
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return HeldOut(texts, run.context.fingerprinter(texts))


@flow(name="build-dataset", flow_run_name=artifacts.run_name("build"), log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=2))
def build_dataset(dataset: str, profile: str = "local", limit: int | None = None, reuse_cache: bool = True,
                  rebuild: bool = False, home: str | None = None, dry_run: bool = False,
                  max_requests: int | None = None, max_output_tokens: int | None = None,
                  max_cost: float | None = None, source: str | None = None, encoding: str | None = None) -> dict[str, Any]:
    """Build one dataset version from its spec; returns where it was published. `dry_run`
    returns the plan (requests, tokens, time, cost per stage and model) and builds nothing.
    `source` (a file, folder, glob or hub id) replaces the spec's source; `encoding` is the
    fallback for rows that are not UTF-8."""
    if dry_run:
        from flows.plan import plan_build

        return plan_build(dataset, profile, limit, home)
    return run_build(dataset, profile, limit, reuse_cache, rebuild, home,
                     budget=Budget(max_requests, max_output_tokens, max_cost), source=source, encoding=encoding)


def build_with_configured_runner(dataset: str, profile: str = "local", **parameters: Any) -> dict[str, Any]:
    """Run the build flow on the task runner the profile asks for (threads, or a Dask cluster)."""
    profile_model = load_profile(profile)
    if profile_model.task_runner == "threads":
        return build_dataset(dataset=dataset, profile=profile, **parameters)
    from prefect_dask import DaskTaskRunner

    runner = (DaskTaskRunner(address=profile_model.dask_address) if profile_model.dask_address else
              DaskTaskRunner(cluster_kwargs={"n_workers": profile_model.dask_workers, "threads_per_worker": 1,
                                             "processes": True}))
    return build_dataset.with_options(task_runner=runner)(dataset=dataset, profile=profile, **parameters)


def run_build(dataset: str, profile: str = "local", limit: int | None = None, reuse_cache: bool = True,
              rebuild: bool = False, home: str | None = None, budget: Budget = Budget(), source: str | None = None,
              encoding: str | None = None) -> dict[str, Any]:
    """The build; under a flow run each shard step is a Prefect task run. A budget stop ends
    the build cleanly at a shard boundary: nothing is published, finished shards stay for the
    next run (a larger budget resumes from there)."""
    run = BuildRun.prepare(dataset, profile, limit, reuse_cache, Path(home) if home else None, encoding)
    run.budget, run.start_usage, run.source_location = budget, run.usage_by_engine(), source
    try:
        with work_folder_lock(run.home / run.spec.name / ".work"), stop_on_signals():
            # one build per dataset at a time; Ctrl-C / SIGTERM stop at the next request, finished shards kept
            return build(run, rebuild)
    except BudgetExceeded as stop:
        run.context.logger.warning("%s: %s", run.spec.name, stop)
        return {"dataset": run.spec.name, "version": None, "path": None, "reused": False, "stopped": str(stop),
                "spent": {"requests": stop.spent.requests, "output_tokens": stop.spent.output_tokens,
                          "cost_usd": stop.spent.cost_usd}}
