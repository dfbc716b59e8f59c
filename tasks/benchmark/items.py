"""The items of a benchmark, built from a release's ``default`` config: one row per
response (detect), prompt (generate), question (hhh) or conversation (rate), with the
labels and references the requests and the figures need. Nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tasks.benchmark.kinds import (
    ALIGNMENT_CHOICES, DEMOGRAPHIC_COLUMNS, HHH_REFERENCES, HUMAN_RATING_COLUMN, MISALIGNED, UNLABELLED, Kind,
)


@dataclass(frozen=True)
class BenchmarkData:
    """What a benchmark runs on: one row per item in ``items`` (key ``item_id``)."""

    kind: Kind
    items: pd.DataFrame
    dimensions: tuple[str, ...] = ()  # alignment dimensions (detect, generate)
    semantic_dimension: str | None = None  # MISALIGNTRADE's semantic type
    humans: pd.DataFrame | None = None  # rate: one row per (conversation, human rater)
    build_ratings: pd.DataFrame | None = None  # rate: the build's llm_ratings (prompt_id, rater_model, rating)
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out, by reason

    @property
    def demographic_columns(self) -> list[str]:
        if self.humans is None:
            return []
        return [column for column in DEMOGRAPHIC_COLUMNS if column in self.humans.columns]


def is_label(value: Any) -> bool:
    return isinstance(value, str) and value not in UNLABELLED


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def optional_value(value: Any) -> Any:
    """pandas' missing markers (NaN, NA) as None, so they never pass for a value."""
    return None if value is None or (not isinstance(value, (str, bool)) and pd.isna(value)) else value


def first_prompts(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows of the first ``limit`` prompt ids in id order: ids are content hashes, so
    this is a fixed pseudo-random sample of the prompts."""
    if limit is None:
        return frame
    kept = sorted(frame["prompt_id"].unique())[:limit]
    return frame[frame["prompt_id"].isin(kept)]


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what}: the release lacks column(s) {missing}; it has {list(frame.columns)}")


def _split_of(row: Mapping[str, Any]) -> str | None:
    return optional_value(row.get("split"))


def detection_items(rows: pd.DataFrame, dimensions: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Every aligned and misaligned response of a SAVACU / MISALIGNTRADE release as an item.

    Returns the items and how many (row, target) pairs had no response to evaluate.
    """
    label_columns = [f"{d}_label" for d in dimensions]
    _require_columns(rows, ["prompt_id", "prompt", "generator_model", "aligned_response", "misaligned_response",
                            *label_columns], "detect")
    items, missing = [], 0
    for row in rows.sort_values(["prompt_id", "generator_model"]).to_dict("records"):
        for target in ALIGNMENT_CHOICES:
            response = row[f"{target}_response"]
            if not is_text(response):
                missing += 1
                continue
            items.append({
                "item_id": f"{row['prompt_id']}/{row['generator_model']}/{target}", "prompt_id": row["prompt_id"],
                "generator_model": row["generator_model"], "split": _split_of(row), "prompt": row["prompt"],
                "response": response, "target": target, "is_misaligned": target == MISALIGNED,
                **{column: optional_value(row[column]) for column in label_columns},
            })
    return pd.DataFrame(items, columns=["item_id", "prompt_id", "generator_model", "split", "prompt", "response",
                                        "target", "is_misaligned", *label_columns]), missing


def prompt_items(rows: pd.DataFrame, dimensions: Sequence[str]) -> pd.DataFrame:
    """Every prompt of a SAVACU / MISALIGNTRADE release once (a release has one row per
    prompt and generator; the prompt and its labels are the same on each)."""
    label_columns = [f"{d}_label" for d in dimensions]
    _require_columns(rows, ["prompt_id", "prompt", *label_columns], "generate")
    unique = rows.sort_values("prompt_id").drop_duplicates("prompt_id")
    items = pd.DataFrame({"item_id": unique["prompt_id"], "prompt_id": unique["prompt_id"],
                          "split": [_split_of(r) for r in unique.to_dict("records")], "prompt": unique["prompt"]})
    for column in label_columns:
        items[column] = [optional_value(v) for v in unique[column]]
    return items.reset_index(drop=True)


def hhh_items(rows: pd.DataFrame) -> pd.DataFrame:
    """Every CULTURAX question once, with its references (the first generator's row when
    a release has several)."""
    references = sorted(set(HHH_REFERENCES.values()))
    _require_columns(rows, ["prompt_id", "question", "domain", *references], "hhh")
    unique = rows.drop_duplicates("prompt_id").sort_values("prompt_id")  # keeps the release's generator order
    items = pd.DataFrame({"item_id": unique["prompt_id"], "prompt_id": unique["prompt_id"],
                          "split": [_split_of(r) for r in unique.to_dict("records")],
                          "question": unique["question"], "domain": [optional_value(v) for v in unique["domain"]]})
    for column in references:
        items[column] = [v if is_text(v) else None for v in unique[column]]
    return items.reset_index(drop=True)


def rating_items(rows: pd.DataFrame, domain_dimension: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Demo-SafetyBench conversations once each, and the human ratings (one row per
    conversation and rater) with the raters' demographics."""
    _require_columns(rows, ["prompt_id", "conversation", HUMAN_RATING_COLUMN], "rate")
    domain_column = f"{domain_dimension}_label"
    unique = rows.sort_values("prompt_id").drop_duplicates("prompt_id")
    records = unique.to_dict("records")
    items = pd.DataFrame({
        "item_id": unique["prompt_id"], "prompt_id": unique["prompt_id"], "split": [_split_of(r) for r in records],
        "conversation": unique["conversation"],
        # The raters judged the conversation's final assistant turn; show it unless the text already holds it.
        "response": [r["response"] if is_text(r.get("response")) and r["response"] not in r["conversation"] else None
                     for r in records],
        "domain": [optional_value(r.get(domain_column)) for r in records],
    }).reset_index(drop=True)
    human_columns = ["prompt_id", *[c for c in ("rater_id", *DEMOGRAPHIC_COLUMNS) if c in rows.columns],
                     HUMAN_RATING_COLUMN]
    humans = rows[human_columns].rename(columns={"prompt_id": "item_id"}).reset_index(drop=True)
    humans[HUMAN_RATING_COLUMN] = [optional_value(v) for v in humans[HUMAN_RATING_COLUMN]]
    return items, humans


def benchmark_data(kind: Kind, default: pd.DataFrame, dimensions: Sequence[str], semantic_dimension: str | None,
                   llm_ratings: pd.DataFrame | None = None, limit: int | None = None) -> BenchmarkData:
    """The items of one benchmark from the release's ``default`` config (one split or all)."""
    rows = first_prompts(default, limit)
    if kind == "detect":
        items, missing = detection_items(rows, [*dimensions, *([semantic_dimension] if semantic_dimension else [])])
        return BenchmarkData(kind, items, tuple(dimensions), semantic_dimension, skipped={"no response": missing})
    if kind == "generate":
        items = prompt_items(rows, [*dimensions, *([semantic_dimension] if semantic_dimension else [])])
        return BenchmarkData(kind, items, tuple(dimensions), semantic_dimension)
    if kind == "hhh":
        return BenchmarkData(kind, hhh_items(rows))
    items, humans = rating_items(rows, dimensions[0])
    build = None
    if llm_ratings is not None:
        build = llm_ratings[llm_ratings["prompt_id"].isin(items["item_id"])][["prompt_id", "rater_model", "rating"]]
    return BenchmarkData(kind, items, tuple(dimensions), humans=humans, build_ratings=build)
