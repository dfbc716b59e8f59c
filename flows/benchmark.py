"""The benchmark flow: models under test on a built dataset version, scored as the papers
score them, with confidence intervals, the n behind every figure, and operational costs.

Method, in order:

1. Read the version. Its manifest holds the spec it was built from, whose response mode
   says which benchmark applies (detect / generate for SAVACU and MISALIGNTRADE, joint HHH
   for CULTURAX, rater agreement for Demo-SafetyBench); the ``default`` config gives the
   items (one split or all, optionally the first N prompts by id).
2. Each model under test, loaded one at a time and released after, answers every item in
   R runs (the papers' evaluation sampling: temperature 0.7, top-p 0.9, 512 tokens,
   repetition penalty 1.1, seed 42 + run; raters are greedy and run once).
3. The spec's judge, loaded once, gives closed-choice verdicts on all the answers
   (generate mode and CULTURAX only).
4. Figures (tasks.benchmark.summary on tasks.benchmark.metrics) with bootstrap intervals over items, and per
   model requests, tokens, latency, throughput, cold start and GPU peak.
5. items.parquet, summary.parquet, report.md, run.json and the plots are written next to
   the version, atomically (tasks.benchmark.report); in a flow run the headline table and
   the report also become Prefect artifacts.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
import typer
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from rich.console import Console

from flows.artifacts import run_key
from flows import artifacts
from flows.console_tables import print_table
from flows.temporary_server import start_temporary_server_in_own_session
from schemas.profile import Profile
from schemas.spec import DatasetSpec
from tasks.benchmark.report import RunInfo, summary_records, write_results
from tasks.config import PROMPTS_DIR, ConfigError, alignforge_home, load_profile
from tasks.engines.pool import EnginePool
from tasks.benchmark.items import BenchmarkData, benchmark_data
from tasks.benchmark.judging import EngineSource, answer_items, item_table, judge_all
from tasks.benchmark.kinds import EVALUATION_SAMPLING, SEMANTIC_TYPE_TAXONOMY, EvaluationSettings, benchmark_kind
from tasks.benchmark.summary import headline, summarise
from tasks.prompts import PromptLibrary
from tasks.release.store import DatasetStore

MODES = ("detect", "generate")
StepRunner = Callable[..., Any]  # (label, function, *args, **kwargs) -> function's result


def call_directly(label: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a step as a plain call (tests, scripts)."""
    return function(*args, **kwargs)


def call_as_task(label: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a step as a Prefect task run named ``label``. Results hold engines' answers and
    DataFrames: nothing to cache or persist between runs."""
    step = task(function, name=function.__name__, task_run_name=label, cache_policy=NO_CACHE, persist_result=False)
    return step(*args, **kwargs)


@dataclass(frozen=True)
class BenchmarkOptions:
    """The parameters of one benchmark run (the flow's, minus where engines come from)."""

    dataset: str
    models: tuple[str, ...]
    version: str | None = None
    mode: str | None = None
    runs: int = 3
    limit: int | None = None
    split: str | None = None
    seed: int = 42
    max_response_tokens: int = EVALUATION_SAMPLING.max_tokens
    bootstrap_resamples: int = 1000
    reuse_build_ratings: bool = True
    profile: str = "local"

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("name at least one model under test")
        if self.runs < 1:
            raise ValueError(f"runs must be at least 1, got {self.runs}")
        object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))  # a model named twice runs once

    def settings(self) -> EvaluationSettings:
        return EvaluationSettings(runs=self.runs, seed=self.seed, max_response_tokens=self.max_response_tokens,
                                  bootstrap_resamples=self.bootstrap_resamples)

    def run_id(self, version: str, now: datetime) -> str:
        """UTC time plus a digest of the parameters: sorts by time, names what it ran."""
        digest = hashlib.sha256(json.dumps({**asdict(self), "version": version}, sort_keys=True).encode()).hexdigest()
        return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest[:8]}"


@dataclass(frozen=True)
class PreparedBenchmark:
    version: str
    version_folder: Path
    spec: DatasetSpec
    data: BenchmarkData


@dataclass(frozen=True)
class BenchmarkOutcome:
    info: RunInfo
    path: Path
    summary: pd.DataFrame

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.info.dataset, "version": self.info.version, "run_id": self.info.run_id,
                "kind": self.info.kind, "path": str(self.path),
                "headline": summary_records(headline(self.summary, self.info.kind))}


def load_benchmark(store: DatasetStore, options: BenchmarkOptions) -> PreparedBenchmark:
    """The version's spec (from its manifest) and the benchmark's items."""
    version = options.version or store.latest(options.dataset)
    if version is None:
        raise FileNotFoundError(f"{options.dataset}: no published version; build it first")
    manifest = store.manifest(options.dataset, version)
    spec = DatasetSpec.model_validate(manifest.spec)
    kind = benchmark_kind(spec, options.mode)
    default = store.read(options.dataset, version, "default", split=options.split).to_pandas()
    llm_ratings = None
    if kind == "rate" and "llm_ratings" in manifest.splits:
        rating_split = options.split if options.split in manifest.splits["llm_ratings"] else None
        llm_ratings = store.read(options.dataset, version, "llm_ratings", split=rating_split).to_pandas()
    dimensions = [d.name for d in spec.dimensions if d.taxonomy != SEMANTIC_TYPE_TAXONOMY]
    semantic = next((d.name for d in spec.dimensions if d.taxonomy == SEMANTIC_TYPE_TAXONOMY), None)
    data = benchmark_data(kind, default, dimensions, semantic, llm_ratings, options.limit)
    if data.items.empty:
        raise ValueError(f"{options.dataset} {version}: no items to evaluate (split {options.split or 'all'})")
    return PreparedBenchmark(version, store.path(options.dataset, version), spec, data)


def run_benchmark(options: BenchmarkOptions, store: DatasetStore, engines: EngineSource,
                  step: StepRunner = call_directly) -> BenchmarkOutcome:
    """The method of the module docstring; ``step`` runs each stage (plainly, or as a task)."""
    started_at, started = datetime.now(timezone.utc), time.perf_counter()
    settings = options.settings()
    prepared = step("load", load_benchmark, store, options)
    library = PromptLibrary(PROMPTS_DIR / "benchmark")

    answered = [step(f"answer[{model}]", answer_items, engines, model, prepared.data, library, settings,
                     options.reuse_build_ratings) for model in options.models]
    answers = pd.concat([model_answers.answers for model_answers in answered], ignore_index=True)
    judge_model = prepared.spec.models.judge
    verdicts, judge_log = step("judge", judge_all, engines, judge_model, prepared.data, answers, library, settings)

    items = item_table(prepared.data, answers, verdicts, settings)
    logs = [model_answers.log for model_answers in answered] + ([judge_log] if judge_log else [])
    summary = step("summarise", summarise, prepared.data, items, options.models, logs, settings)

    info = RunInfo(
        run_id=options.run_id(prepared.version, started_at), dataset=options.dataset, version=prepared.version,
        kind=prepared.data.kind, profile=options.profile, models=options.models,
        engines={model_answers.log.model: model_answers.log.engine for model_answers in answered},
        judge_model=judge_log.model if judge_log else None, judge_engine=judge_log.engine if judge_log else None,
        split=options.split, limit=options.limit, n_items=len(prepared.data.items), skipped=prepared.data.skipped,
        settings=settings, templates=dict(library.used), started_at=started_at.isoformat(timespec="seconds"),
        wall_seconds=round(time.perf_counter() - started, 2),
        cold_start_sources={log.model: log.cold_start_source for log in logs if log.cold_start_source},
    )
    path = step("write", write_results, prepared.version_folder, info, items, summary)
    return BenchmarkOutcome(info, path, summary)


def models_sharing_engines(models: Sequence[str], profile: Profile) -> dict[str, list[str]]:
    """Engine id -> the models under test that the profile runs on it, where there are several
    (the local profile maps every model id to one small model)."""
    by_engine: dict[str, list[str]] = {}
    for model in dict.fromkeys(models):
        by_engine.setdefault(profile.engine_for(model).engine_id(model), []).append(model)
    return {engine: names for engine, names in by_engine.items() if len(names) > 1}


def check_distinct_engines(models: Sequence[str], profile: Profile, allow_same_engine: bool) -> None:
    """Two names on one engine would be reported as two models; refuse unless asked."""
    shared = models_sharing_engines(models, profile)
    if shared and not allow_same_engine:
        listed = "; ".join(f"{', '.join(names)} -> {engine}" for engine, names in shared.items())
        raise ConfigError(f"profile {profile.name} runs several models under test on one engine ({listed}); "
                          "their results would be the same model's. Pass --allow-same-engine to run them anyway")


@flow(name="benchmark", flow_run_name=artifacts.run_name("benchmark"), log_prints=True)
def benchmark(dataset: str, models: list[str], version: str | None = None, profile: str = "local",
              mode: str | None = None, runs: int = 3, limit: int | None = None, split: str | None = None,
              seed: int = 42, bootstrap_resamples: int = 1000, reuse_cache: bool = False,
              reuse_build_ratings: bool = True, home: str | None = None, allow_same_engine: bool = False) -> dict[str, Any]:
    """Benchmark models under test on a built dataset version; returns where the results are.

    The profile maps model ids to engines and may cap response length; models it maps to one
    engine are refused unless ``allow_same_engine``. ``reuse_cache`` is off by default: answers
    from the request cache would make latency and throughput meaningless.
    """
    profile_model = load_profile(profile)
    check_distinct_engines(models, profile_model, allow_same_engine)
    root = Path(home) if home else alignforge_home()
    pool = EnginePool(profile_model, cache_path=root / "cache" / "requests.sqlite", reuse_cache=reuse_cache)
    max_tokens = min(EVALUATION_SAMPLING.max_tokens, profile_model.max_response_tokens or EVALUATION_SAMPLING.max_tokens)
    options = BenchmarkOptions(dataset=dataset, models=tuple(models), version=version, mode=mode, runs=runs,
                               limit=limit, split=split, seed=seed, max_response_tokens=max_tokens,
                               bootstrap_resamples=bootstrap_resamples, reuse_build_ratings=reuse_build_ratings,
                               profile=profile)
    outcome = run_benchmark(options, DatasetStore(root), pool, step=call_as_task)
    create_table_artifact(key=run_key("benchmark", dataset),
                          table=summary_records(headline(outcome.summary, outcome.info.kind)),
                          description=f"{dataset} {outcome.info.version}: headline figures of run {outcome.info.run_id}")
    create_markdown_artifact(key=run_key("benchmark", dataset, "report"),
                             markdown=(outcome.path / "report.md").read_text(encoding="utf-8"),
                             description=f"{dataset} {outcome.info.version}: benchmark report, run {outcome.info.run_id}")
    return outcome.as_dict()


def benchmark_command(
    dataset: Annotated[str, typer.Argument(help="culturax, savacu, misaligntrade or demo_safetybench")],
    models: Annotated[str, typer.Option(help="Comma-separated ids of the models under test (the profile maps them to engines)")],
    version: Annotated[Optional[str], typer.Option(help="Dataset version (default: the latest)")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate on the first N prompts (by prompt id)")] = None,
    profile: Annotated[str, typer.Option(help="local (CPU, packaged model) or paper (vLLM)")] = "local",
    mode: Annotated[Optional[str], typer.Option(help="SAVACU / MISALIGNTRADE: detect (default) or generate")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs averaged (seed 42 + run)")] = 3,
    split: Annotated[Optional[str], typer.Option(help="Evaluate one split only (default: all)")] = None,
    reuse_cache: Annotated[bool, typer.Option("--reuse-cache", help="Answer from the request cache where possible "
                                              "(latency and throughput then understate the cost)")] = False,
    rerate: Annotated[bool, typer.Option("--rerate", help="Demo-SafetyBench: rate again with models that rated the "
                                         "build, instead of reusing its llm_ratings")] = False,
    allow_same_engine: Annotated[bool, typer.Option("--allow-same-engine", help="Run models that the profile maps to "
                                                    "one engine (their results are that engine's, once per name)")] = False,
    home: Annotated[Optional[Path], typer.Option(help="Data home (default $ALIGNFORGE_HOME or ~/.cache/alignforge)")] = None,
) -> None:
    """Benchmark models on DATASET: results, report and plots next to the version."""
    if mode is not None and mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="--mode")
    model_ids = [model.strip() for model in models.split(",") if model.strip()]
    if not model_ids:
        raise typer.BadParameter("name at least one model", param_hint="--models")
    check_distinct_engines(model_ids, load_profile(profile), allow_same_engine)  # before a Prefect server starts
    start_temporary_server_in_own_session()
    result = benchmark(dataset=dataset, models=model_ids, version=version, profile=profile, mode=mode, runs=runs,
                       limit=limit, split=split, reuse_cache=reuse_cache, reuse_build_ratings=not rerate,
                       home=str(home) if home else None, allow_same_engine=allow_same_engine)
    console = Console(soft_wrap=True)
    rows = []
    for row in result["headline"]:
        low, high = row["ci_low"], row["ci_high"]
        interval = f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        value = f"{row['value']:.3f}" if row["value"] is not None else "n/a"
        rows.append([row["model"], row["metric"], value, interval, str(row["n_items"])])
    print_table(console, ["model", "metric", "value", "95% CI", "n"], rows)
    console.print(f"[bold]{result['dataset']}[/] {result['version']} benchmark [cyan]{result['run_id']}[/] "
                  f"({result['kind']})\n{result['path']}/report.md")
