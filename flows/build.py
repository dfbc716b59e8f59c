"""The build flow: one pipeline, driven by a dataset spec, in the papers' order.

Stage I (queries): load the source, reclassify into the taxonomy, SimHash near-duplicate
removal, expand low-resource domains, split with a leakage check. Stage II (responses):
generate and keep responses by two-stage rejection sampling (or, for Demo-SafetyBench,
let LLMs rate). Then assemble the release tables, check the invariants and publish a
version atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.exceptions import MissingContextError

from schemas.manifest import ExpansionOutcome, Manifest, ModelUse, SourceFingerprint, StageReport
from schemas.records import REJECT_SCHEMA
from flows.plan import make_plan
from flows.progress import report as progress_report
from tasks import __version__
from flows import artifacts
from tasks.planning.budget import Budget, BudgetExceeded, estimate_shard, spend_between
from tasks.release.card import render_card
from tasks.planning.plan import plan_totals
from tasks.release.checkpoint import ShardCheckpoints
from tasks.stage1.classify import classify_shard
from tasks.config import (
    PROJECT_ROOT, PROMPTS_DIR, alignforge_home, apply_profile, load_profile, load_spec, model_sha, taxonomies_for,
    with_source_encoding,
)
from tasks.core import RowAccountingError, StepContext, StepResult, concat, merge_reports, reasons, run_step
from tasks.dedup.near_duplicates import Fingerprinter, remove_near_duplicates, with_fingerprints
from tasks.engines.base import EngineUsage
from tasks.engines.pool import EnginePool, PoolUsage, add_usage
from tasks.stage1.expand import ExpansionResult, expand_domains
from tasks.release.invariants import check_release
from tasks.prompts import PromptLibrary
from tasks.stage2.rate import rate_conversations
from tasks.release.tables import release_tables
from tasks.stage2.respond import generate_responses, responses_of
from tasks.stage1.sources import LoadedSource, load_source
from tasks.stage1.split import split_and_check_leakage
from tasks.release.store import DatasetStore

# Stage II by response mode: a fifth dataset with a new kind of Stage II adds one entry.
STAGE_TWO: dict[str, tuple[str, Callable[[pa.Table, StepContext], StepResult]]] = {
    "hhh": ("respond", generate_responses),
    "aligned_misaligned": ("respond", generate_responses),
    "raters": ("rate", rate_conversations),
}


@dataclass
class BuildRun:
    """Everything one build reads, resolved once: the inputs that define its version."""

    spec_name: str
    profile_name: str
    limit: int | None
    reuse_cache: bool
    home: Path
    context: StepContext
    pool: EnginePool
    budget: Budget = field(default_factory=Budget)
    start_usage: dict[str, EngineUsage] = field(default_factory=dict)
    reports: list[StageReport] = field(default_factory=list)
    rejects: list[pa.Table] = field(default_factory=list)
    # Usage of shards that ran on other processes' pools (Dask workers): ours never sees it.
    elsewhere_usage: dict[str, EngineUsage] = field(default_factory=dict)
    elsewhere_roles: dict[tuple[str, str], str] = field(default_factory=dict)
    source_location: str | None = None  # `--source`: the user's copy instead of the spec's source

    def count_shard_usage(self, shard_usage: PoolUsage | None) -> None:
        if shard_usage is None or shard_usage.pool_id == self.pool.pool_id:
            return  # resumed from a checkpoint, or already counted by our own pool
        self.elsewhere_usage = add_usage(self.elsewhere_usage, shard_usage.usage)
        self.elsewhere_roles.update(shard_usage.roles)

    def usage_by_engine(self) -> dict[str, EngineUsage]:
        return add_usage(self.pool.usage_by_engine(), self.elsewhere_usage)

    def roles(self) -> dict[tuple[str, str], str]:
        return {**self.elsewhere_roles, **self.pool.roles()}

    def check_budget(self, stage: str, rows: pa.Table, where: str) -> None:
        """Stop before work whose upper-bound estimate could take the build past its budget."""
        if self.budget == Budget():
            return
        spent = spend_between(self.start_usage, self.usage_by_engine(), self.roles(), self.context.profile)
        self.budget.check(spent, estimate_shard(stage, rows, self.spec, self.context.profile), where)

    @classmethod
    def prepare(cls, dataset: str, profile: str, limit: int | None, reuse_cache: bool, home: Path | None = None,
                encoding: str | None = None) -> BuildRun:
        profile_model = load_profile(profile)
        spec = with_source_encoding(apply_profile(load_spec(dataset), profile_model), encoding)
        taxonomies = taxonomies_for(spec)
        home = home or alignforge_home()
        descriptions = {d.name: d.description for t in taxonomies.values() for d in t.domains}
        descriptions.update({t.none.name: t.none.description for t in taxonomies.values() if t.none})
        pool = EnginePool(profile_model, cache_path=home / "cache" / "requests.sqlite", reuse_cache=reuse_cache,
                          label_descriptions=descriptions)
        context = StepContext(spec=spec, profile=profile_model, taxonomies=taxonomies,
                              prompts=PromptLibrary(PROMPTS_DIR), engines=pool, logger=_logger())
        effective_limit = limit if limit is not None else profile_model.limit
        return cls(dataset, profile, effective_limit, reuse_cache, home, context, pool)

    @property
    def spec(self):
        return self.context.spec

    @property
    def shard_size(self) -> int:
        return self.spec.shard_size

    def content_key(self, source: SourceFingerprint) -> str:
        """Digest of every input that determines the result: same inputs, same version."""
        parts = {
            "spec": model_sha(self.spec), "profile": model_sha(self.context.profile), "limit": self.limit,
            "taxonomies": {name: model_sha(t) for name, t in self.context.taxonomies.items()},
            "templates": template_hashes(), "source": source.sha256, "code": __version__,
        }
        return hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()


def template_hashes() -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(PROMPTS_DIR.glob("*.yaml"))}


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("alignforge")


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[5, 30],
      task_run_name="{stage}[{dataset} shard {number}/{total}]")
def run_shard(stage: str, dataset: str, number: int, total: int, step: Callable, table: pa.Table, context: StepContext,
              checkpoints: ShardCheckpoints, unit: str = "prompt") -> tuple[StepResult, StageReport, PoolUsage | None]:
    """One step over one shard, skipped when a previous run already finished it; with the
    engine usage it caused (None when skipped)."""
    saved = checkpoints.load(stage, number)
    if saved is not None:
        return (*saved, None)
    pool = cast(EnginePool, context.engines)  # a build's context always carries its pool
    usage_before = pool.usage_by_engine()
    try:
        result, report = run_step(stage, step, table, context, unit=unit)
    finally:
        if pool.is_copy:  # a Dask worker's copy loaded models for this shard alone: free them now
            pool.release()
    checkpoints.save(stage, number, result, report)
    return result, report, pool.usage_since(usage_before)


def map_shards(run: BuildRun, stage: str, step: Callable, table: pa.Table, checkpoints: ShardCheckpoints,
               progress: Callable[[str, int, int], None]) -> tuple[pa.Table, dict[str, list[pa.Table]]]:
    shards = [table.slice(offset, run.shard_size) for offset in range(0, max(table.num_rows, 1), run.shard_size)]
    total = len(shards)
    arguments = [(stage, run.spec.name, number, total, step, shard, run.context, checkpoints)
                 for number, shard in enumerate(shards, start=1)]
    in_flow = FlowRunContext.get() is not None
    budgeted = run.budget != Budget()

    def counted(outcome: tuple[StepResult, StageReport, PoolUsage | None]) -> tuple[StepResult, StageReport]:
        result, report, usage = outcome
        run.count_shard_usage(usage)
        return result, report

    def outcomes():
        # With a budget, shards go one at a time so each check sees what the last one spent.
        futures = []
        for args in arguments:
            number, shard = args[2], args[5]
            if budgeted and checkpoints.load(stage, number) is None:
                run.check_budget(stage, shard, f"{stage} shard {number}/{total}")
            if not in_flow:  # plain Python (scripts, the crash tests): no Prefect runs
                yield counted(run_shard.fn(*args))
                continue
            futures.append(run_shard.with_options(tags=[run.spec.name, stage]).submit(*args))
            if budgeted:
                yield counted(futures.pop().result())
        yield from (counted(future.result()) for future in futures)

    kept, side, reports = [], {}, []
    shard_done = artifacts.stage_progress(run.spec.name, stage, total)
    with gpu_slot(run):
        finished = list(outcomes())
        if run.pool.releases_between_stages:  # hand the GPU back before the slot is released
            run.pool.release()
    for number, (result, report) in enumerate(finished, start=1):
        kept.append(result.kept)
        run.rejects.append(result.rejects)
        for name, side_table in result.side.items():
            side.setdefault(name, []).append(side_table)
        reports.append(report)
        progress(stage, number, total)
        shard_done(number)
    run.reports.append(merge_reports(reports))
    artifacts.stage_table(run.spec.name, run.reports[-1])
    return concat(kept, schema=table.schema if not kept else kept[0].schema), side


GPU_CONCURRENCY_LIMIT = "alignforge-gpu"


@contextlib.contextmanager
def gpu_slot(run: BuildRun) -> Iterator[None]:
    """Hold the global GPU slot while a GPU stage loads and runs its models, so two flows never
    load models on one GPU at once (create the limit once: `prefect gcl create alignforge-gpu
    --limit 1`; without it, or outside a flow run, this waits for nothing)."""
    if FlowRunContext.get() is None or not run.pool.releases_between_stages:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1, strict=False):
        yield


def global_report(stage: str, rows_in: int, kept: int, rejects: pa.Table, stats: dict[str, float], seconds: float,
                  unit: str = "prompt") -> StageReport:
    """The report of a global step, whose rows in = kept + rejected is checked here (shard
    steps are checked by `run_step`)."""
    if rows_in != kept + rejects.num_rows:
        raise RowAccountingError(f"step {stage}: {rows_in} {unit}s in, {kept} kept + {rejects.num_rows} rejected")
    return StageReport(stage=stage, unit=unit, rows_in=rows_in, kept=kept, rejected=rejects.num_rows,
                       rejected_by_reason=reasons(rejects), stats=stats, seconds=round(seconds, 3))


@flow(name="build-dataset", flow_run_name="build-{dataset}-{profile}", log_prints=True,
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
        return _build(run, rebuild)
    except BudgetExceeded as stop:
        run.context.logger.warning("%s: %s", run.spec.name, stop)
        return {"dataset": run.spec.name, "version": None, "path": None, "reused": False, "stopped": str(stop),
                "spent": {"requests": stop.spent.requests, "output_tokens": stop.spent.output_tokens,
                          "cost_usd": stop.spent.cost_usd}}


def _build(run: BuildRun, rebuild: bool) -> dict[str, Any]:
    started = time.perf_counter()
    progress = progress_report
    store = DatasetStore(run.home)
    logger = run.context.logger

    # Stage I, query construction.
    source = load_source(run.spec, PROJECT_ROOT, real=run.context.profile.source == "real", limit=run.limit,
                         location=run.source_location, home=run.home)
    key = run.content_key(source.fingerprint)
    existing = store.find_version(run.spec.name, key)
    if existing and not rebuild:
        logger.info("%s: inputs unchanged, version %s already published", run.spec.name, existing)
        return {"dataset": run.spec.name, "version": existing, "path": str(store.path(run.spec.name, existing)), "reused": True}
    checkpoints = ShardCheckpoints(run.home / run.spec.name / ".work" / key[:16])
    plan = checkpoints.load_value("plan") or plan_totals(make_plan(run.spec_name, run.profile_name, run.limit, home=run.home,
                                                                   source_location=run.source_location))
    checkpoints.save_value("plan", plan)
    _record_load(run, source)
    progress("load", 1, 1)

    prompts, _ = map_shards(run, "classify", classify_shard, source.prompts, checkpoints, progress)
    before_expansion = _domain_counts(run, prompts)

    fingerprinter = Fingerprinter.fit(prompts["text"].to_pylist(), run.spec.dedup)
    prompts = _global(run, "dedup", lambda t: remove_near_duplicates(with_fingerprints(t, fingerprinter), run.spec.dedup,
                                                                     run.spec.seed), prompts, checkpoints, progress)

    if checkpoints.load("expand", 0) is None:
        run.check_budget("expand", prompts, "expand")
    expansion = _expand(run, prompts, fingerprinter, checkpoints)
    prompts = expansion.table
    progress("expand", 1, 1)
    after_expansion = _domain_counts(run, prompts)

    split_result = {}

    def split_step(table: pa.Table) -> StepResult:
        result, leakage = split_and_check_leakage(
            table, run.spec.splits.fractions, run.spec.splits.stratify_by, run.spec.dedup.tau, run.spec.seed,
            heldout_fingerprints=_heldout_fingerprints(run, fingerprinter))
        split_result["leakage"] = {"test_items": leakage.test_items, "test_items_leaking": leakage.test_items_leaking,
                                   "rate": leakage.rate, "heldout_items": leakage.heldout_items,
                                   "train_removed": leakage.train_removed}
        return result

    prompts = _global(run, "split", split_step, prompts, checkpoints, progress)
    leakage = split_result.get("leakage") or checkpoints.load_value("leakage") or {}
    checkpoints.save_value("leakage", leakage)

    # Stage II, responses (or LLMs as raters).
    stage_name, stage_two = STAGE_TWO[run.spec.responses.mode]
    prompts, side = map_shards(run, stage_name, stage_two, prompts, checkpoints, progress)
    side_tables = {name: concat(tables) for name, tables in side.items()}
    if "responses" in side_tables:
        # Candidates of prompts that left are in the rejects table; publish the kept ones.
        side_tables["responses"] = responses_of(prompts, side_tables["responses"])
    if source.annotations is not None:
        kept_ids = set(prompts["prompt_id"].to_pylist())
        side_tables["annotations"] = source.annotations.filter(
            pa.array([pid in kept_ids for pid in source.annotations["prompt_id"].to_pylist()]))

    configs = release_tables(prompts, side_tables.get("responses"), side_tables.get("ratings"),
                             side_tables.get("annotations"), run.spec)
    problems = check_release(prompts, side_tables, run.context.taxonomies, run.reports)
    if problems:
        raise RuntimeError(f"{run.spec.name}: not published, invariants failed: " + "; ".join(problems[:10]))

    published_counts = _domain_counts(run, prompts)
    manifest = _manifest(run, key, source, expansion, before_expansion, after_expansion, published_counts, leakage,
                         started)
    manifest.plan = plan
    splits_by_config = {config: _by_split(table) for config, table in configs.items()}
    side_tables["rejects"] = concat(run.rejects, schema=REJECT_SCHEMA)
    published = store.publish(run.spec.name, key, splits_by_config, side_tables, manifest,
                              card=lambda m: render_card(m, run.spec, run.context.taxonomies))
    run.pool.release()
    checkpoints.clear()
    progress("publish", 1, 1)
    artifacts.published(run.spec.name, published.version, Path(published.path),
                        (Path(published.path) / "README.md").read_text())
    logger.info("%s: published version %s at %s", run.spec.name, published.version, published.path)
    return {"dataset": run.spec.name, "version": published.version, "path": str(published.path), "reused": False,
            "seconds": round(time.perf_counter() - started, 1)}


def _global(run: BuildRun, stage: str, step: Callable[[pa.Table], StepResult], table: pa.Table,
            checkpoints: ShardCheckpoints, progress: Callable[[str, int, int], None]) -> pa.Table:
    saved = checkpoints.load(stage, 0)
    if saved is None:
        started = time.perf_counter()
        result = step(table)
        report = global_report(stage, table.num_rows, result.kept.num_rows, result.rejects, result.stats,
                               time.perf_counter() - started)
        checkpoints.save(stage, 0, result, report)
    else:
        result, report = saved
    run.reports.append(report)
    run.rejects.append(result.rejects)
    artifacts.stage_table(run.spec.name, report)
    progress(stage, 1, 1)
    return result.kept


def _expand(run: BuildRun, prompts: pa.Table, fingerprinter: Fingerprinter,
            checkpoints: ShardCheckpoints) -> ExpansionResult:
    saved = checkpoints.load("expand", 0)
    if saved is not None:
        result, report = saved
        outcomes = [ExpansionOutcome.model_validate(o) for o in (checkpoints.load_value("expansion") or {}).get("outcomes", [])]
        expansion = ExpansionResult(result.kept, result.rejects, outcomes, dict(report.stats))
    else:
        started = time.perf_counter()
        with gpu_slot(run):
            expansion = expand_domains(prompts, run.context, fingerprinter)
            if run.pool.releases_between_stages:
                run.pool.release()
        report = global_report("expand", int(expansion.stats.get("generated", 0)),
                               int(expansion.stats.get("accepted", 0)), expansion.rejects, expansion.stats,
                               time.perf_counter() - started, unit="candidate")
        checkpoints.save("expand", 0, StepResult(kept=expansion.table, rejects=expansion.rejects,
                                                 stats=expansion.stats), report)
        checkpoints.save_value("expansion", {"outcomes": [o.model_dump() for o in expansion.outcomes]})
    run.reports.append(report)
    run.rejects.append(expansion.rejects)
    artifacts.stage_table(run.spec.name, report)
    return expansion


def _heldout_fingerprints(run: BuildRun, fingerprinter: Fingerprinter):
    if not run.spec.splits.heldout:
        return None
    path = PROJECT_ROOT / run.spec.splits.heldout
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return fingerprinter(texts)


def _record_load(run: BuildRun, source: LoadedSource) -> None:
    report = StageReport(stage="load", unit="source_row", rows_in=source.rows_read,
                         kept=source.rows_read - source.rejects.num_rows, rejected=source.rejects.num_rows,
                         rejected_by_reason=reasons(source.rejects), stats=source.stats)
    run.reports.append(report)
    run.rejects.append(source.rejects)
    artifacts.stage_table(run.spec.name, report)


def _domain_counts(run: BuildRun, table: pa.Table) -> dict[str, dict[str, int]]:
    return {name: dict(sorted(Counter(table[f"{name}_label"].to_pylist()).items())) for name in run.context.taxonomies}


def _by_split(table: pa.Table) -> dict[str, pa.Table]:
    """Non-empty splits (an empty Parquet split breaks loaders); an empty table stays one empty train split."""
    if "split" not in table.column_names or table.num_rows == 0:
        return {"train": table}
    names = sorted(set(table["split"].to_pylist()))
    return {name: table.filter(pa.compute.equal(table["split"], name)) for name in names}


def _manifest(run: BuildRun, key: str, source: LoadedSource, expansion, before: dict, after: dict, published: dict,
              leakage: dict, started: float) -> Manifest:
    usage = run.usage_by_engine()
    # One entry per engine: roles and spec models that share it (the local profile runs every
    # generating role on one small model) are listed together, so its usage is counted once.
    shared: dict[str, tuple[list[str], list[str]]] = {}
    for (role, spec_model), engine_name in sorted(run.roles().items()):
        roles, spec_models = shared.setdefault(engine_name, ([], []))
        if role not in roles:
            roles.append(role)
        if spec_model not in spec_models:
            spec_models.append(spec_model)
    models = []
    for engine_name, (roles, spec_models) in shared.items():
        used = usage.get(engine_name)
        revision = run.context.profile.engine_for(spec_models[0]).revision
        models.append(ModelUse(role=", ".join(roles), spec_model=", ".join(spec_models),
                               engine=f"{engine_name}@{revision or 'unpinned'}", **(used.as_dict() if used else {})))
    domain_counts = {name: {"before": before.get(name, {}), "after": after.get(name, {}),
                            "published": published.get(name, {})}
                     for name in run.context.taxonomies}
    return Manifest(
        dataset=run.spec.name, version="pending", content_key=key, created_at=datetime.now(timezone.utc).isoformat(),
        alignforge_version=__version__, profile=run.profile_name,
        spec=run.spec.model_dump(mode="json"), source=source.fingerprint,
        taxonomies={name: model_sha(t) for name, t in run.context.taxonomies.items()},
        templates=template_hashes(), models=models, seed=run.spec.seed, stages=run.reports,
        expansion=expansion.outcomes, domain_counts=domain_counts, leakage=leakage,
        wall_seconds=round(time.perf_counter() - started, 2), open_choices=open_choices(run),
    )


def open_choices(run: BuildRun) -> dict[str, str]:
    """What the papers left open, and what this build chose (written into the card)."""
    spec = run.spec
    return {
        "simhash": f"{spec.dedup.bits}-bit fingerprints over word/char n-grams ({spec.dedup.shingle}, n={spec.dedup.ngram}), "
                   f"{spec.dedup.weighting} weighting, tau={spec.dedup.tau}; method {spec.dedup.method}",
        "classification": f"closed choice over the taxonomy labels; label kept when its probability >= "
                          f"{spec.classification.threshold}, otherwise Unknown; {spec.classification.max_attempts} attempts",
        "expansion_target": f"each domain topped up to {spec.expansion.target_per_domain} "
                            f"prompts in at most {spec.expansion.max_rounds} rounds, generated prompts must reclassify into their domain",
        "judge": f"scores 1-10, pass at >= {spec.responses.judge_threshold}, at most {spec.responses.feedback_iterations} "
                 f"feedback iterations",
        "splits": f"{spec.splits.fractions} stratified by {spec.splits.stratify_by or 'nothing'}, seeded hash order",
        "limit": str(run.limit),
    }
