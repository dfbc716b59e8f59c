"""What a plan needs to know about the source, cheaply: its rows without loading it, and
sample texts to render the templates with.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from schemas.spec import DatasetSpec
from tasks.config import PROJECT_ROOT, alignforge_home
from tasks.stage1.source_files import FORMAT_BY_SUFFIX, SourceUnavailable, find_files
from tasks.stage1.sources import how_to_point, is_hub_id, load_source, real_path

SAMPLE_TEXTS = 32  # prompts rendered per template: a stable mean at a bounded rendering cost


@dataclass(frozen=True)
class SourceRows:
    rows: int | None  # None: unknown without loading (or downloading) the source
    how: str


def count_source_rows(spec: DatasetSpec, *, real: bool, project_root: Path = PROJECT_ROOT,
                      home: Path | None = None, location: str | None = None) -> SourceRows:
    """Rows of the source the build reads (`location`: the build's `--source`), without loading
    it: lines or CSV records streamed, Parquet metadata, or a hub dataset's cached
    `dataset_info.json`."""
    source = spec.source
    if location is not None:
        if is_hub_id(location):
            return _hub_rows(location, None, "train")
        return _location_rows(spec, Path(location).expanduser())
    if not real:
        path = project_root / source.sample
        return SourceRows(_file_rows(path, source.format), f"{source.format} rows of {source.sample}")
    if source.real.hub_id:
        return _hub_rows(source.real.hub_id, source.real.config, source.real.split)
    if source.real.path:
        return _location_rows(spec, real_path(spec, home or alignforge_home()))
    return SourceRows(None, f"unknown: {source.real.url} is remote and counting it needs a download")


def _location_rows(spec: DatasetSpec, path: Path) -> SourceRows:
    try:
        _, files, _ = find_files(path, spec.source.format)
    except SourceUnavailable:
        return SourceRows(None, f"unknown: nothing at {path} yet ({how_to_point(spec)})")
    rows = sum(_file_rows(file, FORMAT_BY_SUFFIX.get(file.suffix.lower(), spec.source.format)) for file in files)
    return SourceRows(rows, f"rows of the {len(files)} file(s) at {path}")


def _file_rows(path: Path, kind: str) -> int:
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if kind == "jsonl":
            return sum(1 for line in handle if line.strip())  # the reader skips blank lines
        if kind == "json":
            document = json.load(handle)
            return len(document if isinstance(document, list) else next(
                (v for v in document.values() if isinstance(v, list)), []))
        # Records, not lines: a quoted field may hold newlines. Blank lines are skipped like csv.DictReader does.
        records = csv.reader(handle, delimiter="\t" if kind == "tsv" else ",")
        return max(0, sum(1 for record in records if record) - 1)


def _hub_rows(hub_id: str, config: str | None, split: str) -> SourceRows:
    """Rows of a hub split from the `datasets` cache when it was loaded on this machine
    (looking it up on the hub would mean network calls and retries)."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    namespace, _, name = hub_id.rpartition("/")
    folder = f"{namespace}___{camelcase_to_snakecase(name)}" if namespace else camelcase_to_snakecase(name)
    infos = sorted(Path(datasets.config.HF_DATASETS_CACHE).glob(f"{folder}/{config or 'default'}/*/*/dataset_info.json"),
                   key=lambda p: p.stat().st_mtime)
    for info in reversed(infos):
        splits = json.loads(info.read_text(encoding="utf-8")).get("splits") or {}
        if split in splits:
            return SourceRows(int(splits[split]["num_examples"]), f"datasets cache of {hub_id} ({split})")
    return SourceRows(None, f"unknown: {hub_id} is not in this machine's datasets cache (it is counted once loaded)")


@dataclass(frozen=True)
class SourceSample:
    texts: list[str]
    prompts_per_row: float
    how: str


def sample_prompts(spec: DatasetSpec, *, real: bool, limit: int | None, project_root: Path = PROJECT_ROOT,
                   size: int = SAMPLE_TEXTS, location: str | None = None) -> SourceSample:
    """Texts to render templates with, and prompts per source row, from the bundled sample
    (small, loaded whole); for a real source the sample stands in for it. A build's `--source`
    (`location`) is read itself: its layout may not be the sample's."""
    loaded = load_source(spec, project_root, real=False, location=location)
    texts = loaded.prompts["text"].to_pylist()[:min(size, limit or size)]  # the build takes the first prompts
    ratio = loaded.prompts.num_rows / loaded.rows_read if loaded.rows_read else 1.0
    if location is not None:
        how = f"{len(texts)} prompts of {location}"
    else:
        how = f"{len(texts)} prompts of {spec.source.sample}" + (" standing in for the real source" if real else "")
    return SourceSample(texts, ratio, how)
