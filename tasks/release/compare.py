"""Two versions compared by content, for versions whose prompt ids cannot match (our build
and the authors' imported release): labels, lengths, and overlap by SimHash.

`DatasetStore.diff` compares versions row by row through their prompt ids; an imported
release has ids of its own, so here the prompts are compared as texts: the label
distribution of each, their lengths, and how many prompts of each have a near-duplicate
in the other (SimHash, fitted once over both so the fingerprints share one IDF table, at
the dataset's tau), plus identical texts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.spec import DatasetSpec, DedupSpec
from tasks.dedup.near_duplicates import Fingerprinter, leaking_rows
from schemas.records import DEFAULT_TEXT_COLUMN, TEXT_COLUMN
from tasks.dedup.features import normalize_text
from tasks.release.store import DatasetStore


@dataclass(frozen=True)
class VersionComparison:
    labels: pd.DataFrame  # one row per label: prompts and share in each version
    lengths: pd.DataFrame  # one row per version: prompts, characters and words
    overlap: pd.DataFrame  # one row per direction: prompts with a near-duplicate / identical text in the other


def label_column(spec: DatasetSpec) -> str:
    """The default config's label column: CULTURAX's `domain`, else the first dimension's label."""
    return "domain" if spec.responses.mode == "hhh" else f"{spec.dimensions[0].name}_label"


def compare_versions(store: DatasetStore, dataset: str, old: str, new: str, by: str | None = None) -> VersionComparison:
    spec = DatasetSpec.model_validate(store.manifest(dataset, old).spec)
    text, label = TEXT_COLUMN.get(spec.responses.mode, DEFAULT_TEXT_COLUMN), by or label_column(spec)
    frames = {version: store.read(dataset, version, "default", columns=["prompt_id", text, label]).to_pandas()
              .drop_duplicates("prompt_id") for version in (old, new)}
    return VersionComparison(
        labels=label_distribution({v: f[label] for v, f in frames.items()}, label),
        lengths=length_summary({v: f[text] for v, f in frames.items()}),
        overlap=simhash_overlap(frames[old][text].tolist(), frames[new][text].tolist(), old, new, spec.dedup),
    )


def label_distribution(labels: dict[str, pd.Series], name: str) -> pd.DataFrame:
    counts = pd.DataFrame({version: values.fillna("(missing)").value_counts() for version, values in labels.items()})
    counts = counts.fillna(0).astype(int).sort_index()
    for version in labels:
        total = counts[version].sum()
        counts[f"{version} share"] = (counts[version] / total).round(4) if total else 0.0
    return counts.rename_axis(name).reset_index()


def length_summary(texts: dict[str, pd.Series]) -> pd.DataFrame:
    rows = []
    for version, values in texts.items():
        characters, words = values.str.len(), values.str.split().str.len()
        rows.append({"version": version, "prompts": len(values), "mean characters": round(characters.mean(), 1),
                     "median characters": characters.median(), "mean words": round(words.mean(), 1)})
    return pd.DataFrame(rows)


def simhash_overlap(old_texts: list[str], new_texts: list[str], old: str, new: str, dedup: DedupSpec) -> pd.DataFrame:
    fingerprinter = Fingerprinter.fit([*old_texts, *new_texts], dedup)
    old_prints, new_prints = fingerprinter(old_texts), fingerprinter(new_texts)
    old_normal, new_normal = ({normalize_text(t) for t in texts} for texts in (old_texts, new_texts))
    rows = []
    for source, target, texts, prints, other_texts, other_prints, other_normal in (
            (old, new, old_texts, old_prints, new_texts, new_prints, new_normal),
            (new, old, new_texts, new_prints, old_texts, old_prints, old_normal)):
        nearest, _ = leaking_rows(texts, prints, other_texts, other_prints, dedup)
        near = int(np.count_nonzero(nearest >= 0))
        rows.append({"prompts of": source, "found in": target, "prompts": len(texts),
                     "near-duplicate": near, "share": round(near / len(texts), 4) if texts else 0.0,
                     "identical text": sum(normalize_text(t) in other_normal for t in texts)})
    return pd.DataFrame(rows)
