"""`alignforge`: build, inspect, diff, export and benchmark datasets from the terminal."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flows.console_tables import print_table

# Tracebacks without local variables: a frame's locals can hold a token or a whole table.
app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
console = Console(soft_wrap=True)  # paths and version ids are never folded at 80 columns in a log

# A temporary Prefect server migrates its new database at first start: on 2 busy cores that took
# longer than Prefect's 20 s default and the first build failed.
EPHEMERAL_SERVER_STARTUP_SECONDS = "300"

HomeOption = Annotated[Optional[Path], typer.Option(help="Data home (default $ALIGNFORGE_HOME or ~/.cache/alignforge)")]


def _store(home: Path | None):
    from tasks.config import alignforge_home
    from tasks.release.store import DatasetStore

    return DatasetStore(home or alignforge_home())


@app.command()
def build(
    dataset: str,
    profile: Annotated[str, typer.Option(help="local (CPU, packaged model, samples) or paper (vLLM, real sources)")] = "local",
    limit: Annotated[Optional[int], typer.Option(help="Use at most N source prompts")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Reuse nothing finished earlier: every LLM request runs "
                                           "again (no request cache, no finished shards) and a new version is written")] = False,
    rebuild: Annotated[bool, typer.Option(help="Write a new version even if one with the same inputs exists "
                                          "(finished shards and cached LLM answers are reused)")] = False,
    max_requests: Annotated[Optional[int], typer.Option(min=1, help="Stop before a shard that could exceed N requests")] = None,
    max_output_tokens: Annotated[Optional[int], typer.Option(min=1, help="Stop before a shard that could exceed N output tokens")] = None,
    max_cost: Annotated[Optional[float], typer.Option(min=0, help="Stop before a shard that could exceed N US dollars (prices from the profile)")] = None,
    source: Annotated[Optional[str], typer.Option(
        "--source", help="Your copy of the source: a CSV, TSV, JSONL, JSON or Parquet file, a folder or a glob "
                         "(or a Hub dataset id); replaces the spec's source")] = None,
    encoding: Annotated[Optional[str], typer.Option(
        help="Fallback encoding for rows that are not UTF-8 (default cp1252 for CSV/TSV)")] = None,
    home: HomeOption = None,
) -> None:
    """Build DATASET (culturax, savacu, misaligntrade, demo_safetybench) from its spec."""
    from flows.build import build_with_configured_runner
    from flows.progress import cli_progress
    from tasks.config import load_profile, load_spec

    from flows.temporary_server import start_temporary_server_in_own_session

    # A bad spec or profile fails here, in one line, before a Prefect server starts.
    load_spec(dataset)
    load_profile(profile)
    start_temporary_server_in_own_session()
    with cli_progress(console.is_terminal):
        result = build_with_configured_runner(dataset=dataset, profile=profile, limit=limit, reuse_cache=not no_cache, rebuild=rebuild,
                               home=str(home) if home else None, max_requests=max_requests,
                               max_output_tokens=max_output_tokens, max_cost=max_cost, source=source,
                               encoding=encoding)
    if result.get("stopped"):
        console.print(f"[yellow]{result['stopped']}[/]\nNothing published; run again with a larger budget to resume.")
        raise typer.Exit(3)
    state = "reused (inputs unchanged)" if result["reused"] else f"built in {result.get('seconds', '?')} s"
    console.print(f"[bold]{result['dataset']}[/] version [cyan]{result['version']}[/] {state}\n{result['path']}")


@app.command("list")
def list_versions(home: HomeOption = None) -> None:
    """List built datasets and their versions."""
    store = _store(home)
    rows = [[dataset, info.version, ", ".join(f"{c}/{s}={n}" for c, splits in info.rows.items() for s, n in splits.items()),
             "*" if info.is_latest else ""]
            for dataset in store.datasets() for info in store.list_versions(dataset)]
    print_table(console, ["dataset", "version", "rows", "latest"], rows)


@app.command()
def show(dataset: str, version: Annotated[Optional[str], typer.Argument()] = None, home: HomeOption = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest")] = False) -> None:
    """Show a version's manifest: stages, expansion, leakage, models, spend."""
    manifest = _store(home).manifest(dataset, version)
    if as_json:
        console.print_json(manifest.model_dump_json())
        return
    console.print(f"[bold]{manifest.dataset}[/] {manifest.version} (profile {manifest.profile}, {manifest.wall_seconds} s)")
    print_table(console, ["stage", "unit", "in", "added", "kept", "rejected", "reasons", "candidates", "seconds"],
                [[stage.stage, stage.unit, str(stage.rows_in), str(stage.added), str(stage.kept), str(stage.rejected),
                  ", ".join(f"{k}={v}" for k, v in stage.rejected_by_reason.items()), candidates_cell(stage),
                  f"{stage.wall_seconds:.1f}"] for stage in manifest.stages])
    print_table(console, ["role", "spec model", "engine", "requests", "cache hits", "tokens in", "tokens out", "seconds"],
                [[use.role, use.spec_model, use.engine, str(use.requests), str(use.cache_hits), str(use.prompt_tokens),
                  str(use.completion_tokens), f"{use.seconds:.1f}"] for use in manifest.models])
    if manifest.expansion:
        unmet = [o for o in manifest.expansion if not o.met]
        console.print(f"expansion: {len(manifest.expansion)} domains below target, {len(unmet)} unmet")
    if manifest.plan:
        actual = {"requests": sum(m.requests for m in manifest.models),
                  "output_tokens": sum(m.completion_tokens for m in manifest.models),
                  "seconds": manifest.wall_seconds}
        rows = []
        for name, value in actual.items():
            bounds = manifest.plan.get(name)
            rows.append([name, f"{bounds[0]:,} - {bounds[1]:,}" if bounds else "n/a", f"{value:,}"])
        print_table(console, ["plan vs actual", "planned (lower - upper)", "actual"], rows)
    console.print(f"leakage: {json.dumps(manifest.leakage)}")
    console.print(f"splits: {json.dumps(manifest.splits)}")


def candidates_cell(stage) -> str:
    """A generating stage's candidates: how many were generated and kept, and why the others left."""
    if stage.candidates_generated is None:
        return ""
    return (f"{stage.candidates_generated} generated, {stage.candidates_kept} kept: "
            + ", ".join(f"{k}={v}" for k, v in stage.candidates_rejected_by_reason.items()))


@app.command()
def diff(dataset: str, old: str, new: str, by: Annotated[Optional[str], typer.Option(help="Column to group by")] = None,
         home: HomeOption = None) -> None:
    """Rows added / removed between two versions (per value of --by); against an imported
    release (`alignforge import`), also labels, lengths and overlap by SimHash."""
    from schemas.manifest import SOURCE_KIND_IMPORT

    store = _store(home)
    frame = store.diff(dataset, old, new, by=by)
    console.print(frame.to_string(index=False))
    if any(store.manifest(dataset, version).source.kind == SOURCE_KIND_IMPORT for version in (old, new)):
        from tasks.release.compare import compare_versions

        comparison = compare_versions(store, dataset, old, new, by=by)
        for title, table in (("labels", comparison.labels), ("lengths", comparison.lengths),
                             ("overlap by SimHash", comparison.overlap)):
            console.print(f"\n[bold]{title}[/]\n{table.to_string(index=False)}")


@app.command("import")
def import_command(
    dataset: Annotated[str, typer.Argument(help="culturax (a release in the authors' CULTURAX column layout)")],
    path: Annotated[str, typer.Argument(help="The release file (CSV, TSV, JSONL, JSON or Parquet)")],
    encoding: Annotated[Optional[str], typer.Option(
        help="Fallback encoding for rows that are not UTF-8 (default cp1252 for CSV/TSV)")] = None,
    home: HomeOption = None,
) -> None:
    """Import the authors' release of DATASET as a version, so benchmarks and diff run on it."""
    from flows.import_release import import_release

    result = import_release(dataset, path, home=home, encoding=encoding)
    state = "already imported" if result["reused"] else f"{result['rows']} rows, {result['rejected']} rejected"
    console.print(f"[bold]{result['dataset']}[/] version [cyan]{result['version']}[/] imported ({state})\n{result['path']}")


@app.command()
def export(dataset: str, repo_id: Annotated[str, typer.Option("--repo-id", help="ORG/NAME on the Hub")],
           version: Annotated[Optional[str], typer.Option()] = None,
           private: Annotated[bool, typer.Option(help="Create the repo private")] = False, home: HomeOption = None) -> None:
    """Push a version to the Hugging Face Hub as one commit, tagged with the version."""
    from tasks.release.export import export_version

    store = _store(home)
    result = export_version(store, dataset, version or store.latest(dataset), repo_id, private=private)
    console.print(f"exported to {result.repo_id} (tag {result.tag})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def benchmark(ctx: typer.Context) -> None:
    """Benchmark models on a built dataset (`alignforge benchmark DATASET --models a,b --help`)."""
    from flows.benchmark import benchmark_command

    command = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    command.command()(benchmark_command)
    command(args=ctx.args, prog_name="alignforge benchmark")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def plan(ctx: typer.Context) -> None:
    """Plan a build: requests, tokens, time and cost per stage and model (`alignforge plan DATASET --help`)."""
    from flows.plan import plan_command

    command = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    command.command()(plan_command)
    command(args=ctx.args, prog_name="alignforge plan")


@app.command()
def serve(
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Serve only these deployments")] = None,
    schedules: Annotated[Optional[Path], typer.Option(help="Schedules file (default data/schedules.yaml)")] = None,
    no_schedules: Annotated[bool, typer.Option("--no-schedules", help="Serve for manual runs only")] = False,
) -> None:
    """Serve the build and benchmark deployments (cron schedules from data/schedules.yaml)."""
    from flows.serve import serve_deployments

    refused = serve_deployments(only, schedules, paused=no_schedules)
    for line in refused:
        typer.echo(line, err=True)
    if refused:
        raise typer.Exit(2)


def exit_code_for(error: BaseException) -> int | None:
    """The exit status of an error the user can fix (printed as one line), None for a bug
    (printed with its traceback). 2: bad input (spec, profile, source file, missing token or
    version), 1: a failed export, 128 + signal: a build stopped by a signal."""
    from tasks.config import ConfigError
    from tasks.release.export import ExportError, MissingTokenError
    from tasks.release.store import VersionNotFoundError
    from tasks.stage1.sources import SourceFormatError
    from tasks.stopping import BuildStopped

    if isinstance(error, (ConfigError, SourceFormatError, MissingTokenError, VersionNotFoundError)):
        return 2
    if isinstance(error, ExportError):
        return 1
    if isinstance(error, BuildStopped):
        return 128 + signal.Signals[error.signal_name].value
    return None


class WithoutTraceback(logging.Filter):
    """Prefect logs a failed run's exception with its traceback; for errors the CLI explains in
    one line the traceback is noise, so the record keeps its message only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and exit_code_for(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        return True


WITHOUT_TRACEBACK = WithoutTraceback()  # one instance: adding it again is a no-op


def explain(error: BaseException) -> str:
    from tasks.stopping import BuildStopped

    if isinstance(error, BuildStopped):
        return f"alignforge: build {error}; finished shards are kept, the same command resumes from them"
    return f"alignforge: error: {error}"


def main(argv: list[str] | None = None) -> None:
    """The `alignforge` command: environment defaults set before Prefect or torch load."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_SERVER_STARTUP_SECONDS)
    # OpenMP threads that spin while waiting stall torch ~10x when the cores are shared
    # (measured: SmolLM2 2 tok/s vs 19 tok/s); must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(WITHOUT_TRACEBACK)
    try:
        app(args=argv, prog_name="alignforge")
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise
        print(explain(error), file=sys.stderr, flush=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
