"""Prefect artifacts and events for the UI. Outside a flow run they do nothing.

Every key names the flow run (`<dataset>-<what>-<run>`), so two runs of one dataset, even at
once, never overwrite each other's artifacts; the UI's artifact page lists them per run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from collections.abc import Callable

from prefect.artifacts import (
    create_link_artifact, create_markdown_artifact, create_progress_artifact, create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event

from schemas.manifest import StageReport
from tasks.config import config_label

# The URL under which other machines reach the data home (a shared store: https://, s3://, a
# file:// URL of a mounted share); without it a version is named by this host and its path.
STORE_URL_VARIABLE = "ALIGNFORGE_STORE_URL"
RUN_ID_CHARACTERS = 12  # the end of the run id: random in Prefect's time-ordered ids


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(*parts: str, run_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "-".join([*parts, run_id.replace("-", "")[-RUN_ID_CHARACTERS:]]).lower().replace("_", "-")


def run_key(*parts: str) -> str:
    """The artifact key of `parts` for the current flow run."""
    from prefect.runtime import flow_run

    return artifact_key(*parts, run_id=str(flow_run.id))


def card_markdown(card: str) -> str:
    """The dataset card for the UI: its YAML front matter as a code block (markdown would
    render the `---` fences as rules and the keys as bold lines), the body as it is."""
    if not card.startswith("---\n"):
        return card
    front, fence, body = card[len("---\n"):].partition("\n---\n")
    if not fence:
        return card
    return f"```yaml\n{front}\n```\n\n{body.lstrip()}"


def version_link(dataset: str, version: str, path: Path, store_url: str | None, host: str) -> tuple[str, str]:
    """(link, text) naming where a version lives: under the shared store's URL when there is
    one, else as a file URL with this host's name (RFC 8089), its text naming host and path."""
    if store_url:
        return f"{store_url.rstrip('/')}/{dataset}/{version}", f"{dataset} {version}"
    return f"file://{host}{path.resolve().as_posix()}", f"{dataset} {version} on {host}: {path.resolve()}"


def run_name(kind: str) -> Callable[[], str]:
    """A flow's run-name function: `KIND-DATASET-PROFILE`, with spec and profile files by their stem."""
    def name() -> str:
        from prefect.runtime import flow_run

        parameters = flow_run.parameters
        return f"{kind}-{config_label(parameters['dataset'])}-{config_label(parameters.get('profile', 'local'))}"

    return name


def stage_table(dataset: str, report: StageReport) -> None:
    if not _in_run():
        return
    create_table_artifact(key=run_key(dataset, report.stage), table=stage_rows(report),
                          description=f"{dataset}: {report.stage}, rows in / kept / rejected by reason")


def stage_rows(report: StageReport) -> list[dict[str, object]]:
    """A step's accounting as uniform rows (measure, unit, reason, value): prompt and
    candidate units apart, each rejection with its reason, wall time beside summed shard time."""
    def row(measure: str, unit: str, value: object, reason: str = "") -> dict[str, object]:
        return {"measure": measure, "unit": unit, "reason": reason, "value": value}

    rows = [row("rows in", report.unit, report.rows_in)]
    if report.added:
        rows.append(row("added", report.unit, report.added))
    rows += [row("kept", report.unit, report.kept), row("rejected", report.unit, report.rejected)]
    rows += [row("rejected", report.unit, n, reason) for reason, n in report.rejected_by_reason.items()]
    if report.candidates_generated is not None:
        rejected = report.candidates_generated - (report.candidates_kept or 0)
        rows += [row("generated", "candidate", report.candidates_generated),
                 row("kept", "candidate", report.candidates_kept), row("rejected", "candidate", rejected)]
        rows += [row("rejected", "candidate", n, reason) for reason, n in report.candidates_rejected_by_reason.items()]
    rows += [row("wall seconds", "", report.wall_seconds), row("summed shard seconds", "", report.seconds),
             row("shards", "", report.shards), row("reused shards", "", report.reused_shards)]
    return rows


def stage_progress(dataset: str, stage: str, total: int) -> Callable[[int], None]:
    """A progress artifact for one stage; the returned callable records shards done."""
    if not _in_run():
        return lambda done: None
    artifact = create_progress_artifact(0.0, key=run_key(dataset, stage, "progress"),
                                        description=f"{dataset}: {stage} shards done out of {total}")
    return lambda done: update_progress_artifact(artifact, 100.0 * done / max(total, 1))


def published(dataset: str, version: str, path: Path, card: str) -> None:
    if not _in_run():
        return
    host = socket.gethostname()
    link, text = version_link(dataset, version, path, os.environ.get(STORE_URL_VARIABLE), host)
    emit_event(event="alignforge.version.published", resource={"prefect.resource.id": f"alignforge.dataset.{dataset}"},
               payload={"dataset": dataset, "version": version, "path": str(path), "host": host, "link": link})
    create_markdown_artifact(key=run_key(dataset, "card"), markdown=card_markdown(card),
                             description=f"{dataset} {version} dataset card")
    create_link_artifact(key=run_key(dataset, "version"), link=link, link_text=text)
