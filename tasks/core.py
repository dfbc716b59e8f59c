"""The step contract, and the one place that checks it.

Every step, over one shard or over the whole dataset, is a pure function
``(table, context) -> StepResult``: ``kept`` rows go on, every row that leaves is in
``rejects`` with a reason code, ``stats`` are counts and ``details`` are facts for the
manifest. `run_step` (and `account`, for the load, whose rows come from a file) checks
``rows in + added = kept + rejected`` per unit, and ``generated = kept + rejected`` for
candidates, so no step can lose a row silently and no step checks it itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from schemas.manifest import StageReport
from schemas.profile import Profile
from schemas.records import REJECT_SCHEMA
from schemas.spec import DatasetSpec
from schemas.taxonomy import Taxonomy
from tasks.engines.base import Engine
from tasks.prompts import PromptLibrary


class RowAccountingError(RuntimeError):
    """A step lost or invented rows: a bug, never a data problem."""


@dataclass
class StepResult:
    kept: pa.Table
    rejects: pa.Table = field(default_factory=REJECT_SCHEMA.empty_table)
    stats: dict[str, float] = field(default_factory=dict)
    # Side outputs that travel with the shard (responses, ratings, annotations).
    side: dict[str, pa.Table] = field(default_factory=dict)
    # JSON facts the manifest keeps (expansion outcomes per domain, the leakage report).
    details: dict[str, Any] = field(default_factory=dict)
    # Rows the step created rather than received (expansion's accepted prompts).
    added: int = 0
    # Input units the kept rows stand for, when a kept row is not one input row (the load
    # groups DICES's rater rows into one prompt per conversation).
    kept_units: int | None = None
    # Candidate-level accounting for steps that generate: generated = kept + rejected.
    candidates_generated: int | None = None
    candidates_kept: int | None = None


class EngineProvider(Protocol):
    def __call__(self, role: str, model_id: str) -> Engine: ...


@dataclass
class StepContext:
    """What a step may use. Steps never read files or globals themselves."""

    spec: DatasetSpec
    profile: Profile
    taxonomies: Mapping[str, Taxonomy]  # dimension name -> taxonomy
    prompts: PromptLibrary
    engines: EngineProvider
    logger: logging.Logger | logging.LoggerAdapter = field(default_factory=lambda: logging.getLogger("alignforge"))
    # The build's SimHash fingerprinter (tasks.dedup.near_duplicates.Fingerprinter), its IDF
    # fitted on the classified prompts, so later prompts share the corpus's space.
    fingerprinter: Any = None

    @property
    def seed(self) -> int:
        return self.spec.seed

    def engine(self, role: str, model_id: str | None = None) -> Engine:
        return self.engines(role, model_id or self.default_model(role))

    def default_model(self, role: str) -> str:
        models = self.spec.models
        single = {"classifier": models.classifier, "expander": models.expander, "judge": models.judge}
        if role in single and single[role]:
            return single[role]
        raise KeyError(f"role {role!r} has no single model in spec {self.spec.name}; pass model_id")


Step = Callable[[pa.Table, StepContext], StepResult]


def make_rejects(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a rejects table; `record_id`, `unit`, `stage` and `reason` are required per row."""
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in REJECT_SCHEMA.names}
    return pa.table(columns, schema=REJECT_SCHEMA)


def concat(tables: Iterable[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    tables = [t for t in tables if t is not None]
    if not tables:
        if schema is None:
            raise ValueError("concat of no tables needs a schema")
        return schema.empty_table()
    if schema is not None:
        tables = [t.select(schema.names).cast(schema) for t in tables]
    return pa.concat_tables(tables, promote_options="none" if schema is not None else "default")


def rejected_count(rejects: pa.Table, unit: str) -> int:
    if rejects.num_rows == 0:
        return 0
    return int(pc.sum(pc.equal(rejects["unit"], unit)).as_py() or 0)


def run_step(name: str, step: Step, table: pa.Table, context: StepContext, unit: str = "prompt") -> tuple[StepResult, StageReport]:
    started = time.perf_counter()
    result = step(table, context)
    return result, account(name, unit, table.num_rows, result, time.perf_counter() - started)


def account(name: str, unit: str, rows_in: int, result: StepResult, seconds: float) -> StageReport:
    """The step's report, once its rows add up; a step that lost or invented rows is a bug."""
    rejected = rejected_count(result.rejects, unit)
    kept_units = result.kept.num_rows if result.kept_units is None else result.kept_units
    if rows_in + result.added != kept_units + rejected:
        added = f" + {result.added} added" if result.added else ""
        raise RowAccountingError(f"step {name}: {rows_in} {unit}s in{added}, {kept_units} kept + {rejected} rejected")
    candidate_reasons: dict[str, int] = {}
    if result.candidates_generated is not None:
        candidate_rejects = result.rejects.filter(pc.equal(result.rejects["unit"], "candidate"))
        if result.candidates_generated != (result.candidates_kept or 0) + candidate_rejects.num_rows:
            raise RowAccountingError(
                f"step {name}: {result.candidates_generated} candidates generated, "
                f"{result.candidates_kept} kept + {candidate_rejects.num_rows} rejected"
            )
        candidate_reasons = reasons(candidate_rejects)
    in_unit = result.rejects.filter(pc.equal(result.rejects["unit"], unit)) if result.rejects.num_rows else result.rejects
    return StageReport(
        stage=name, unit=unit, rows_in=rows_in, added=result.added, kept=kept_units, rejected=rejected,
        rejected_by_reason=reasons(in_unit), candidates_generated=result.candidates_generated,
        candidates_kept=result.candidates_kept, candidates_rejected_by_reason=candidate_reasons,
        stats=dict(result.stats), seconds=round(seconds, 3), wall_seconds=round(seconds, 3),
    )


def reasons(rejects: pa.Table) -> dict[str, int]:
    return dict(sorted(Counter(rejects["reason"].to_pylist()).items())) if rejects.num_rows else {}


def merge_reports(reports: Iterable[StageReport], wall_seconds: float, reused_shards: int = 0) -> StageReport:
    """Sum one stage's per-shard reports into the stage's report."""
    reports = list(reports)
    if not reports:
        raise ValueError("no reports to merge")

    def summed(field_name: str) -> dict[str, Any]:
        total: Counter[str] = Counter()
        for report in reports:
            total.update(getattr(report, field_name))
        return dict(sorted(total.items()))

    generated = [r.candidates_generated for r in reports if r.candidates_generated is not None]
    return StageReport(
        stage=reports[0].stage, unit=reports[0].unit, rows_in=sum(r.rows_in for r in reports),
        added=sum(r.added for r in reports), kept=sum(r.kept for r in reports),
        rejected=sum(r.rejected for r in reports), rejected_by_reason=summed("rejected_by_reason"),
        candidates_generated=sum(generated) if generated else None,
        candidates_kept=sum(r.candidates_kept or 0 for r in reports) if generated else None,
        candidates_rejected_by_reason=summed("candidates_rejected_by_reason"), stats=summed("stats"),
        seconds=round(sum(r.seconds for r in reports), 3), wall_seconds=round(wall_seconds, 3),
        shards=len(reports), reused_shards=reused_shards,
    )


def summary_line(report: StageReport) -> str:
    """One log line per step: rows in, kept, rejected by reason, seconds."""
    def by_reason(counts: dict[str, int]) -> str:
        return f" ({', '.join(f'{reason} {n}' for reason, n in counts.items())})" if counts else ""

    line = (f"{report.stage}: {report.rows_in} {report.unit}s in"
            + (f" + {report.added} added" if report.added else "")
            + f", {report.kept} kept, {report.rejected} rejected{by_reason(report.rejected_by_reason)}")
    if report.candidates_generated is not None:
        rejected = report.candidates_generated - (report.candidates_kept or 0)
        line += (f"; candidates: {report.candidates_generated} generated, {report.candidates_kept} kept, "
                 f"{rejected} rejected{by_reason(report.candidates_rejected_by_reason)}")
    shards = f", {report.shards} shards ({report.reused_shards} reused)" if report.shards > 1 or report.reused_shards else ""
    return line + f"; {report.wall_seconds:.1f} s{shards}"


def label_counts(tables: Iterable[pa.Table], dimensions: Iterable[str]) -> dict[str, dict[str, int]]:
    """Prompts per label of each dimension, over several shards."""
    counts: dict[str, Counter[str]] = {name: Counter() for name in dimensions}
    for table in tables:
        for name, counter in counts.items():
            if f"{name}_label" in table.column_names:
                counter.update(table[f"{name}_label"].to_pylist())
    return {name: dict(sorted(counter.items())) for name, counter in counts.items()}


def stable_id(*parts: object, length: int = 16) -> str:
    """Content-derived id: the same inputs give the same id on every machine and run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return digest[:length]


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def request_seed(base: int, *parts: object) -> int:
    """A sampling seed derived from the build seed and a step's stable names: the same on
    every run (so reruns hit the request cache), and it fits int32."""
    return int(stable_id(base, *parts), 16) % (2**31)
