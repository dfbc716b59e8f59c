"""The names a release writes are known before anything is built, so a kept source column
can be checked against them at load (and renamed) instead of colliding at publish."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.records import RATING_SCHEMA, annotation_schema
from schemas.spec import ColumnRule
from tasks.config import load_spec
from schemas.records import release_columns
from tasks.kinds import release_tables
from tasks.stage1.sources import kept_column_names
from tests.test_release import TEXTS, prompts, responses, spec_for


def written_columns(spec, tables: dict[str, pa.Table]) -> set[str]:
    return {name for name, table in tables.items() if name != "responses" for name in table.column_names}


@pytest.mark.parametrize("mode, dimensions, targets", [
    ("hhh", ("cultural",), ("helpful", "harmless", "honest")),
    ("aligned_misaligned", ("safety", "value", "cultural", "semantic_type"), ("aligned", "misaligned")),
])
def test_every_column_a_generating_release_writes_is_known(mode, dimensions, targets) -> None:
    spec = spec_for(mode, dimensions, generators=("gen-a", "gen-b"), targets=targets)
    tables = release_tables(prompts(dimensions), {"responses": responses(targets, ("gen-a", "gen-b"))}, spec)
    assert written_columns(spec, tables) <= release_columns(spec)


def test_every_column_a_raters_release_writes_is_known_besides_the_annotations() -> None:
    spec = spec_for("raters", ("safety",), raters=("rater-a",))
    annotations = pa.Table.from_pylist([{"prompt_id": pid, "source_row": 0, "rater_gender": "Man"} for pid in TEXTS],
                                       schema=annotation_schema({"rater_gender": "string"}))
    ratings = pa.Table.from_pylist([{"prompt_id": pid, "rater_model": "rater-a", "rating": "No", "template_sha": "s"}
                                    for pid in ("p0", "p1", "p2")], schema=RATING_SCHEMA)
    tables = release_tables(prompts(("safety",)), {"ratings": ratings, "annotations": annotations}, spec)
    assert written_columns(spec, tables) - {"rater_gender"} <= release_columns(spec)


def test_kept_columns_are_renamed_only_where_the_release_writes_their_name() -> None:
    spec = load_spec("culturax")
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"keep_columns": {
        name: ColumnRule() for name in ("class", "domain", "pass_hhh", "region", "text")}})})
    assert kept_column_names(spec) == {"class": "source_class", "domain": "source_domain",
                                       "pass_hhh": "source_pass_hhh", "region": "region", "text": "source_text"}
    assert kept_column_names(load_spec("demo_safetybench"))["rater_gender"] == "rater_gender"
