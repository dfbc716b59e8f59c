"""`alignforge import`: a release published by a dataset's authors, read into the store as a
version with its own manifest and card (how it is mapped: `tasks.release.imported`)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from schemas.manifest import SOURCE_KIND_IMPORT, Manifest
from schemas.records import REJECT_SCHEMA
from tasks import __version__
from tasks.config import PROJECT_ROOT, alignforge_home, load_spec, model_sha, taxonomies_for
from tasks.core import account, concat
from tasks.dedup.near_duplicates import Fingerprinter
from tasks.release.card import render_card
from tasks.release.imported import IMPORT_STAGE, KEPT_AS, authors_layout, imported_release
from tasks.release.invariants import check_release
from tasks.release.store import DatasetStore
from tasks.stage1.sources import load_source

IMPORTED_SPLIT = "train"  # the authors publish one table; it is kept whole, unsplit


def import_release(dataset: str, path: str, *, home: Path | None = None, encoding: str | None = None) -> dict[str, Any]:
    """Publish the authors' release at `path` as a version of `dataset`; importing the same
    file again finds that version."""
    started = time.perf_counter()
    spec = load_spec(dataset)
    taxonomies = taxonomies_for(spec)
    authors = authors_layout(spec, path, encoding)
    loaded = load_source(authors, PROJECT_ROOT, real=False, location=path)
    source = loaded.fingerprint.model_copy(update={"kind": SOURCE_KIND_IMPORT, "column_renames": KEPT_AS})
    dimension = spec.dimensions[0].name
    fingerprinter = Fingerprinter.fit(loaded.prompts["text"].to_pylist(), spec.dedup)
    loaded_at = time.perf_counter()
    release = imported_release(loaded, authors, taxonomies[dimension], fingerprinter)
    reports = [account("load", "source_row", loaded.rows_read, loaded.step_result(), loaded_at - started),
               account(IMPORT_STAGE, "prompt", loaded.prompts.num_rows, release.step, time.perf_counter() - loaded_at)]
    prompts = release.step.kept
    problems = check_release(prompts, {"responses": release.responses}, taxonomies, reports)
    if problems:
        raise RuntimeError(f"{spec.name}: import not published, invariants failed: " + "; ".join(problems[:10]))

    store = DatasetStore(home or alignforge_home())
    parts = {"release": source.sha256, "layout": model_sha(authors), "code": __version__,
             "taxonomies": {name: model_sha(t) for name, t in taxonomies.items()}}
    key = hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()
    existing = store.find_version(spec.name, key)
    if existing:
        return {"dataset": spec.name, "version": existing, "path": str(store.path(spec.name, existing)), "reused": True}
    counts = dict(sorted(Counter(prompts[f"{dimension}_label"].to_pylist()).items()))
    manifest = Manifest(
        dataset=spec.name, version="pending", content_key=key, created_at=datetime.now(timezone.utc).isoformat(),
        alignforge_version=__version__, profile=SOURCE_KIND_IMPORT, spec=spec.model_dump(mode="json"), source=source,
        taxonomies={name: model_sha(t) for name, t in taxonomies.items()}, templates={}, models=[], seed=spec.seed,
        stages=reports, domain_counts={dimension: {"before": counts, "after": counts, "published": counts}},
        wall_seconds=round(time.perf_counter() - started, 2))
    published = store.publish(
        spec.name, key, {"default": {IMPORTED_SPLIT: release.default}, "responses": {IMPORTED_SPLIT: release.responses}},
        {"rejects": concat([loaded.rejects, release.step.rejects], schema=REJECT_SCHEMA)}, manifest,
        card=lambda final: render_card(final, spec, taxonomies))
    return {"dataset": spec.name, "version": published.version, "path": str(published.path), "reused": False,
            "rows": release.default.num_rows, "rejected": loaded.rejects.num_rows + release.step.rejects.num_rows}
