"""The step contract, and the one place that checks it.

A shard step is a pure function ``(table, context) -> StepResult``: ``kept`` rows go on,
every row that leaves is in ``rejects`` with a reason code, and ``stats`` are counts.
`run_step` checks ``rows in = kept + rejected`` (per unit) so no step can lose a row
silently, and no step has to check it itself.
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
    rejected = rejected_count(result.rejects, unit)
    if table.num_rows != result.kept.num_rows + rejected:
        raise RowAccountingError(
            f"step {name}: {table.num_rows} {unit}s in, {result.kept.num_rows} kept + {rejected} rejected"
        )
    if result.candidates_generated is not None:
        candidate_rejects = rejected_count(result.rejects, "candidate")
        if result.candidates_generated != (result.candidates_kept or 0) + candidate_rejects:
            raise RowAccountingError(
                f"step {name}: {result.candidates_generated} candidates generated, "
                f"{result.candidates_kept} kept + {candidate_rejects} rejected"
            )
    report = StageReport(
        stage=name, unit=unit, rows_in=table.num_rows, kept=result.kept.num_rows, rejected=rejected,
        rejected_by_reason=reasons(result.rejects), stats=dict(result.stats),
        seconds=round(time.perf_counter() - started, 3),
    )
    return result, report


def reasons(rejects: pa.Table) -> dict[str, int]:
    return dict(sorted(Counter(rejects["reason"].to_pylist()).items())) if rejects.num_rows else {}


def merge_reports(reports: Iterable[StageReport]) -> StageReport:
    """Sum one stage's per-shard reports into the stage's report."""
    reports = list(reports)
    if not reports:
        raise ValueError("no reports to merge")
    by_reason: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    for report in reports:
        by_reason.update(report.rejected_by_reason)
        stats.update(report.stats)
    return StageReport(
        stage=reports[0].stage, unit=reports[0].unit, rows_in=sum(r.rows_in for r in reports),
        kept=sum(r.kept for r in reports), rejected=sum(r.rejected for r in reports),
        rejected_by_reason=dict(sorted(by_reason.items())), stats=dict(stats),
        seconds=round(sum(r.seconds for r in reports), 3),
    )


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
