"""`alignforge plan`: what a build will ask of each model, and what it may cost, before it runs.

`make_plan` gathers a plan's inputs (source rows counted without loading the source, the
bundled sample's prompts, offline tokenizers, measured throughputs) and hands them to the
pure estimate (`tasks.planning.plan.estimate_build`). `plan_command` prints it; the `plan-build`
flow writes it as a markdown artifact (the build flow's dry run).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from rich.console import Console

from flows import artifacts
from schemas.profile import Profile
from schemas.spec import DatasetSpec
from tasks.config import apply_profile, load_profile, load_spec
from tasks.engines import create_engine
from tasks.planning.calibration import cached_throughputs, calibrate
from tasks.planning.inputs import count_source_rows, sample_prompts
from tasks.planning.loads import BuildPlan, engine_label
from tasks.planning.plan import estimate_build
from tasks.planning.render import plan_totals, render_plan, render_plan_markdown
from tasks.planning.tokens import load_token_counters, spec_models


def make_plan(dataset: str, profile: str = "local", limit: int | None = None, *, measure: bool = False,
              home: Path | None = None, source_location: str | None = None) -> BuildPlan:
    """The plan of `alignforge build DATASET --profile PROFILE [--limit N] [--source PATH]`;
    `measure` first calibrates the models whose profile entry has no throughput."""
    profile_model = load_profile(profile)
    spec = apply_profile(load_spec(dataset), profile_model)
    real = profile_model.source == "real"
    source = count_source_rows(spec, real=real, home=home, location=source_location)
    sample = sample_prompts(spec, real=real, limit=limit if limit is not None else profile_model.limit,
                            location=source_location)
    throughputs = cached_throughputs(home)
    if measure:
        throughputs.update(calibrate_models(spec, profile_model, home))
    plan = estimate_build(spec, profile_model, source.rows, sample.texts, load_token_counters(spec, profile_model),
                          limit=limit, prompts_per_row=sample.prompts_per_row, throughputs=throughputs)
    return replace(plan, notes=(f"Source rows: {source.how}.", f"Templates rendered over {sample.how}.", *plan.notes))


def calibrate_models(spec: DatasetSpec, profile: Profile, home: Path | None) -> dict[str, float]:
    """Measured output tokens per second of each generating engine the profile gives no throughput."""
    measured: dict[str, float] = {}
    for model in spec_models(spec):
        config = profile.engine_for(model)
        label = engine_label(config, model)
        if config.output_tokens_per_second or config.backend == "embedding" or label in measured:
            continue
        # No request cache: a cached answer takes no time and would measure nothing.
        engine = create_engine(config, model, cache_path=None)
        try:
            measured[label] = calibrate(engine, home=home)
        finally:
            engine.close()
    return measured


def plan_command(
    dataset: Annotated[str, typer.Argument(help="culturax, savacu, misaligntrade or demo_safetybench")],
    profile: Annotated[str, typer.Option(help="local (CPU, packaged model, samples) or paper (vLLM, real sources)")] = "local",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Plan for at most N source prompts")] = None,
    measure: Annotated[bool, typer.Option("--calibrate", help="First measure the throughput of models the profile "
                                          "gives none (cached per machine in $ALIGNFORGE_HOME/calibration.json)")] = False,
    home: Annotated[Optional[Path], typer.Option(help="Data home (default $ALIGNFORGE_HOME or ~/.cache/alignforge)")] = None,
) -> None:
    """Plan a build of DATASET: requests, tokens, time and cost per stage and model, as bounds."""
    plan = make_plan(dataset, profile, limit, measure=measure, home=home)
    console = Console()
    if console.is_terminal:
        console.print(render_plan(plan))
    else:  # a rich table squeezed into 80 columns empties its cells; markdown keeps them whole
        print(render_plan_markdown(plan), flush=True)


@flow(name="plan-build", flow_run_name=artifacts.run_name("plan"), log_prints=True)
def plan_build(dataset: str, profile: str = "local", limit: int | None = None, home: str | None = None) -> dict[str, Any]:
    """Plan a build without running it; in a flow run the plan becomes a markdown artifact."""
    plan = make_plan(dataset, profile, limit, home=Path(home) if home else None)
    markdown = render_plan_markdown(plan)
    if FlowRunContext.get() is not None:
        # Artifact keys allow lowercase letters, digits and dashes only.
        create_markdown_artifact(key=f"{plan.dataset}-plan".replace("_", "-"), markdown=markdown,
                                 description=f"{plan.dataset}: planned requests, tokens, time and cost ({profile})")
    return {**plan_totals(plan), "markdown": markdown}
