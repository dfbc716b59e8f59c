"""Checks that must hold before a version is published (a failure blocks the publish)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pyarrow as pa

from schemas.manifest import StageReport
from schemas.taxonomy import Taxonomy
from tasks.stage2.respond import check_response_integrity


def check_release(prompts: pa.Table, side_tables: Mapping[str, pa.Table], taxonomies: Mapping[str, Taxonomy],
                  reports: list[StageReport]) -> list[str]:
    problems: list[str] = []
    ids = prompts["prompt_id"].to_pylist()
    duplicated = [pid for pid, n in Counter(ids).items() if n > 1]
    if duplicated:
        problems.append(f"prompt ids appear twice: {duplicated[:5]}")
    for name, taxonomy in taxonomies.items():
        outside = set(prompts[f"{name}_label"].to_pylist()) - set(taxonomy.output_labels)
        if outside:
            problems.append(f"{name} labels outside the taxonomy: {sorted(map(str, outside))[:5]}")
    for report in reports:
        if report.rows_in + report.added != report.kept + report.rejected:
            problems.append(f"stage {report.stage}: {report.rows_in} in + {report.added} added != "
                            f"{report.kept} kept + {report.rejected} rejected")
    known = set(ids)
    for name in ("responses", "ratings", "annotations"):
        table = side_tables.get(name)
        if table is not None:
            orphans = set(table["prompt_id"].to_pylist()) - known
            if name != "responses" and orphans:
                problems.append(f"{name} rows name prompt ids that are not in the dataset: {sorted(orphans)[:5]}")
    if side_tables.get("responses") is not None:
        problems.extend(check_response_integrity(prompts, side_tables["responses"]))
    return problems
