"""The manifest: everything needed to trust and reproduce one dataset version."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelUse(_Record):
    """Usage of one engine; the roles and spec models it served are comma-separated."""

    role: str
    spec_model: str  # the id(s) the spec names (the papers' models)
    engine: str  # backend:resolved-model@revision actually used
    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0


class StageReport(_Record):
    """One step's accounting: rows in + added = kept + rejected, in the step's unit; a step
    that generates candidates also accounts for them apart (generated = kept + rejected)."""

    stage: str
    unit: str = "prompt"
    rows_in: int
    added: int = 0  # rows the step created (expansion's accepted prompts)
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int] = {}  # in the step's unit only
    candidates_generated: int | None = None
    candidates_kept: int | None = None
    candidates_rejected_by_reason: dict[str, int] = {}
    stats: dict[str, float] = {}
    seconds: float = 0.0  # step time summed over shards (parallel shards overlap)
    wall_seconds: float = 0.0  # from the stage's start to its end
    shards: int = 1
    reused_shards: int = 0  # shards read back from a checkpoint of an earlier run


class ExpansionOutcome(_Record):
    domain: str
    target: int
    before: int
    reached: int
    rounds: int
    generated: int
    accepted: int
    met: bool


class ClassifierAccuracy(_Record):
    """One classifier's accuracy on held-out labelled prompts of one taxonomy, as measured by
    bench/classifier_accuracy.py and kept in data/classifier_accuracy.json."""

    engine: str  # backend:resolved-model, as a build names the engine (without revision)
    taxonomy: str
    taxonomy_sha256: str  # of the resolved taxonomy measured: another taxonomy text is another classifier
    labelled_set: str  # the held-out prompts, relative to the repository root
    prompts: int
    top1_accuracy: float
    majority_baseline: float  # the largest label's share of the labelled set
    # Per-label accuracy weighted by the authors' published class counts, and that mix's
    # majority share; only for taxonomies that carry the counts.
    class_mix_top1_accuracy: float | None = None
    class_mix_majority_baseline: float | None = None


class FileEntry(_Record):
    path: str  # relative to the version folder
    rows: int
    bytes: int
    sha256: str


class SourceFile(_Record):
    """One file of a source as it was read."""

    path: str  # relative to the source's folder (the file name for a single file)
    format: str
    bytes: int
    sha256: str
    rows: int = 0  # records read (header and blank lines not counted)
    # utf-8 | utf-8-sig (BOM dropped) | utf-16 (BOM) | utf-8+<fallback> (rows that were not
    # UTF-8 decoded with the fallback) | arrow (Parquet: strings are UTF-8 by format)
    encoding: str = "utf-8"
    rows_decoded_with_fallback: int = 0
    header_renames: dict[str, str] = {}  # CSV/TSV header as written -> column name (blank, repeated)


SOURCE_KIND_IMPORT = "import"  # a version holding the authors' release, not a build


class SourceFingerprint(_Record):
    kind: str  # sample | path | url | hub | import
    location: str
    sha256: str  # of the file; of the files' paths and digests for a folder or glob
    rows: int
    # The encoding decision: the fallback a non-UTF-8 row is decoded with, and how many rows it touched.
    fallback_encoding: str | None = None
    rows_decoded_with_fallback: int = 0
    files: list[SourceFile] = []
    skipped_files: list[str] = []  # files of a folder or glob that are not data (README, licence)
    # Kept source columns whose name the release writes itself, and the name they were given.
    column_renames: dict[str, str] = {}
    revision: str | None = None  # hub: the dataset commit that was read


class Manifest(_Record):
    dataset: str
    version: str
    content_key: str
    created_at: str
    alignforge_version: str
    code_sha256: str = ""  # digest of the data-shaping source (tasks.provenance), part of the content key
    git_commit: str | None = None  # when built from a git checkout
    profile: str
    spec: dict[str, Any]
    source: SourceFingerprint
    taxonomies: dict[str, str]  # name -> sha256 of the resolved taxonomy
    templates: dict[str, str]  # template name -> sha256
    models: list[ModelUse]
    seed: int
    stages: list[StageReport]
    expansion: list[ExpansionOutcome] = []
    # dimension -> "before" / "after" (expansion) / "published" (prompts in the version) -> label -> n
    domain_counts: dict[str, dict[str, dict[str, int]]] = {}
    leakage: dict[str, float] = {}
    splits: dict[str, dict[str, int]] = Field(default_factory=dict)  # config -> split -> rows
    files: list[FileEntry] = []
    wall_seconds: float = 0.0
    open_choices: dict[str, str] = {}  # what the papers left open, and what this build chose
    plan: dict[str, Any] = {}  # the dry-run estimate made before the build ran ([lower, upper] totals)
    classifier_accuracy: dict[str, ClassifierAccuracy] = {}  # dimension -> measurement of this build's classifier
