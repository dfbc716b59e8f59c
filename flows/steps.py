"""Running steps: every step of a build, over shards or over the whole dataset, as a named
Prefect task run with its checkpoint, its accounting check, its stage table and one log line.

A shard step is mapped over the table in `shard_size` slices (one task run per shard); a
global step (dedup, expand, split) runs once over all rows. Both return a `StepResult`, both
are checked by `tasks.core.run_step`, and both are saved as checkpoints, so a resumed build
skips what a killed one finished. Outside a flow run (plain Python, the crash tests) the
same code runs without Prefect.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed

from flows import artifacts
from flows.build_run import BuildRun
from flows.progress import report as progress_report
from schemas.manifest import StageReport
from schemas.spec import DatasetSpec
from tasks.config import PROJECT_ROOT
from tasks.core import StepContext, StepResult, account, concat, label_counts, merge_reports, run_step, summary_line
from tasks.engines.pool import EnginePool, PoolUsage
from tasks.planning.budget import Budget
from tasks.release.checkpoint import ShardCheckpoints
from tasks.stopping import raise_if_stopped, stop_requested
from tasks.stage1.sources import LoadedSource, load_source

Step = Callable[[pa.Table, StepContext], StepResult]
GPU_CONCURRENCY_LIMIT = "alignforge-gpu"


def retry_unless_stopped(task: Any, task_run: Any, state: Any) -> bool:
    """A step that failed because the build was asked to stop is not retried."""
    return not stop_requested()


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_unless_stopped, task_run_name="{stage}[{label}]")
def run_step_task(stage: str, label: str, number: int, step: Step, table: pa.Table, context: StepContext,
                  checkpoints: ShardCheckpoints, unit: str) -> tuple[StepResult, StageReport, PoolUsage | None, bool]:
    """One step over one shard (or the whole table, shard 0): read back when an earlier run
    finished it, else run, check and checkpoint it with the engine usage it caused. Returns
    the result, its report, that usage, and whether it was reused."""
    saved = checkpoints.load(stage, number)
    if saved is not None:
        result, report, usage = saved
        context.logger.info("%s: reused from checkpoint", label)
        return result, report, usage, True
    raise_if_stopped()  # shards queued behind a stop request never start
    pool = cast(EnginePool, context.engines)  # a build's context always carries its pool
    usage_before = pool.usage_by_engine()
    try:
        result, report = run_step(stage, step, table, context, unit=unit)
    finally:
        if pool.is_copy:  # a Dask worker's copy loaded models for this shard alone: free them now
            pool.release()
    usage = pool.usage_since(usage_before)
    checkpoints.save(stage, number, result, report, usage)
    return result, report, usage, False


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="load[{dataset}]")
def load_task(dataset: str, spec: DatasetSpec, real: bool, limit: int | None, location: str | None,
              home: Path) -> tuple[LoadedSource, StageReport]:
    """Read the source (`location`: the build's `--source`) and turn its rows into prompts;
    every row read is kept or rejected."""
    started = time.perf_counter()
    source = load_source(spec, PROJECT_ROOT, real=real, limit=limit, location=location, home=home)
    return source, account("load", "source_row", source.rows_read, source.step_result(), time.perf_counter() - started)


def in_task_run(prefect_task: Any, *arguments: Any) -> Any:
    """Call a task as a task run inside a flow run, and as a plain function outside one."""
    return prefect_task(*arguments) if FlowRunContext.get() is not None else prefect_task.fn(*arguments)


@dataclass
class StepRunner:
    """Runs a build's steps in order and gathers what the release needs from them."""

    run: BuildRun
    checkpoints: ShardCheckpoints
    reports: list[StageReport] = field(default_factory=list)
    rejects: list[pa.Table] = field(default_factory=list)
    side: dict[str, list[pa.Table]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its details
    label_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # stage -> dimension -> label -> n

    def shards(self, stage: str, step: Step, table: pa.Table, *, uses_models: bool = True) -> pa.Table:
        """Map a shard step over `shard_size` slices of the table."""
        size = self.run.spec.shard_size
        shards = [table.slice(offset, size) for offset in range(0, max(table.num_rows, 1), size)]
        kept = self._run(stage, step, shards, uses_models=uses_models)
        return concat(kept, schema=kept[0].schema if kept else table.schema)

    def whole(self, stage: str, step: Step, table: pa.Table, *, uses_models: bool = False) -> pa.Table:
        """A global step: one run over every row."""
        [kept] = self._run(stage, step, [table], uses_models=uses_models, global_step=True)
        return kept

    def record(self, report: StageReport, result: StepResult) -> None:
        """A step that ran outside the runner (the load, which reads the source first)."""
        self._finish(report, [result])
        progress_report(report.stage, 1, 1)

    def _run(self, stage: str, step: Step, shards: list[pa.Table], *, uses_models: bool,
             global_step: bool = False) -> list[pa.Table]:
        run, total, started = self.run, len(shards), time.perf_counter()
        dataset = run.spec.name
        unit = "prompt"
        labels = [dataset if global_step else f"{dataset} shard {n}/{total}" for n in range(1, total + 1)]
        numbers = [0] if global_step else list(range(1, total + 1))
        shard_done = artifacts.stage_progress(dataset, stage, total)
        finished: dict[int, tuple[StepResult, StageReport]] = {}
        reused = 0

        def collect(number: int, outcome: tuple[StepResult, StageReport, PoolUsage | None, bool]) -> None:
            nonlocal reused
            result, report, usage, was_reused = outcome
            run.count_shard_usage(usage)
            reused += was_reused
            finished[number] = (result, report)
            progress_report(stage, len(finished), total)
            shard_done(len(finished))

        in_flow = FlowRunContext.get() is not None
        budgeted = run.budget != Budget()
        progress_report(stage, 0, total)
        with self._gpu_slot(uses_models):
            futures = {}
            for number, label, shard in zip(numbers, labels, shards, strict=True):
                arguments = (stage, label, number, step, shard, run.context, self.checkpoints, unit)
                # With a budget, shards go one at a time so each check sees what the last one spent.
                if budgeted and uses_models and self.checkpoints.load(stage, number) is None:
                    run.check_budget(stage, shard, label)
                if not in_flow:  # plain Python (scripts, the crash tests): no Prefect runs
                    collect(number, run_step_task.fn(*arguments))
                    continue
                future = run_step_task.with_options(tags=[dataset, stage]).submit(*arguments)
                if budgeted:
                    collect(number, future.result())
                else:
                    futures[future] = number
            for future in as_completed(list(futures)):
                collect(futures[future], future.result())
            if uses_models and run.pool.releases_between_stages:  # hand the GPU back before the slot goes
                run.pool.release()
        ordered = [finished[number] for number in numbers]
        report = merge_reports([r for _, r in ordered], time.perf_counter() - started, reused)
        self._finish(report, [result for result, _ in ordered])
        return [result.kept for result, _ in ordered]

    def _finish(self, report: StageReport, results: list[StepResult]) -> None:
        self.reports.append(report)
        self.label_counts[report.stage] = label_counts((r.kept for r in results), self.run.context.taxonomies)
        for result in results:
            self.rejects.append(result.rejects)
            for name, table in result.side.items():
                self.side.setdefault(name, []).append(table)
            if result.details:
                self.details.setdefault(report.stage, {}).update(result.details)
        self.run.context.logger.info("%s: %s", self.run.spec.name, summary_line(report))
        artifacts.stage_table(self.run.spec.name, report)

    @contextlib.contextmanager
    def _gpu_slot(self, uses_models: bool) -> Iterator[None]:
        """Hold the global GPU slot while a step loads and runs models, so two flows never load
        models on one GPU at once (create the limit once: `prefect gcl create alignforge-gpu
        --limit 1`; without it, or outside a flow run, this waits for nothing)."""
        if not uses_models or FlowRunContext.get() is None or not self.run.pool.releases_between_stages:
            yield
            return
        from prefect.concurrency.sync import concurrency

        with concurrency(GPU_CONCURRENCY_LIMIT, occupy=1, strict=False):
            yield
