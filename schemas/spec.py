"""Dataset specs: one YAML file per dataset in ``data/specs/`` drives the one build flow.

A spec says what the papers' method needs for one dataset: its source, the taxonomy of
each labelled dimension, the model of each role, and every threshold and target. The
choices the papers left open are fields here, so they are written into the dataset card.
"""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.sampling import SamplingParams

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # dataset names become folder names: no path tricks
SourceFormat = Literal["csv", "tsv", "jsonl", "json", "parquet"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RealSource(_Strict):
    """Where the real prompts live: a hub dataset (maybe gated), a file URL (downloaded once
    into the data home), or a path to the user's own copy: a file, a folder or a glob
    (a relative path is taken under ``<data home>/sources/``)."""

    hub_id: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None  # a hub commit to read; None reads the current head (recorded as read)
    url: str | None = None
    path: str | None = None
    homepage: str | None = None  # where a person downloads the data: named in errors and the card
    license: str
    gated: bool = False

    @model_validator(mode="after")
    def _one_location(self) -> RealSource:
        if sum(bool(location) for location in (self.hub_id, self.url, self.path)) != 1:
            raise ValueError("a real source names exactly one of hub_id, url or path")
        return self

    @property
    def where(self) -> str:
        """The location as a person would name it."""
        return self.hub_id or self.url or self.path or ""


class ColumnRule(_Strict):
    type: Literal["string", "int64", "float64", "bool"] = "string"
    allowed: tuple[str, ...] | None = None  # closed value set (DICES demographics)
    required: bool = True


class SourceSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    real: RealSource
    sample: str  # path relative to the project root
    format: SourceFormat  # of the sample, and of a real file whose suffix names no format
    # Fallback for files that are not valid UTF-8, row by row (None: cp1252 for CSV/TSV, none
    # for JSON, whose standard says UTF-8). It must keep ASCII bytes as ASCII, so that
    # delimiters, quotes and newlines are found before a row is decoded.
    encoding: str | None = None
    text_column: str
    # How the prompt text is built when it spans several columns (DICES: context + response).
    text_template: str | None = None
    id_column: str | None = None
    # Item-level columns carried on every prompt row.
    keep_columns: dict[str, ColumnRule] = {}
    # Per-row annotations when a source has several rows per prompt (DICES: one row per
    # rater x conversation). Rows are grouped by id_column into one prompt each; these
    # columns go to an annotations table joined back at publish time.
    annotation_columns: dict[str, ColumnRule] = {}
    max_chars: int = Field(default=20_000, ge=100)

    @field_validator("encoding")
    @classmethod
    def _ascii_compatible_encoding(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            codec = codecs.lookup(name)
        except LookupError as error:
            raise ValueError(f"unknown encoding {name!r}") from error
        structure = "\t\n\r,\"{}[]:"
        if codec.encode(structure)[0] != structure.encode("ascii"):
            raise ValueError(f"encoding {name!r} does not keep ASCII bytes as ASCII (use it on the whole file)")
        return codec.name

    @model_validator(mode="after")
    def _grouping_needs_id(self) -> SourceSpec:
        if self.annotation_columns and not self.id_column:
            raise ValueError("annotation_columns need an id_column to group rows into prompts")
        both = sorted(set(self.keep_columns) & set(self.annotation_columns))
        if both:
            raise ValueError(f"columns {both} are both keep_columns and annotation_columns")
        return self


class DimensionSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    taxonomy: str = Field(pattern=NAME_PATTERN)


class RoleModels(_Strict):
    classifier: str
    expander: str
    generators: tuple[str, ...] = ()
    judge: str | None = None
    raters: tuple[str, ...] = ()


class ClassificationSpec(_Strict):
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)  # delta: label kept when its probability >= delta
    sampling: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=128)
    max_attempts: int = Field(default=2, ge=1)
    # Dimensions whose None / Unknown rows leave the dataset (CULTURAX: every row needs a subdomain).
    require_label: tuple[str, ...] = ()


class ExpansionSpec(_Strict):
    enabled: bool = True
    dimension: str  # whose domains are topped up
    target_per_domain: int = Field(default=100, ge=0)
    max_rounds: int = Field(default=3, ge=0)
    oversample: float = Field(default=1.5, ge=1.0)  # ask for (missing x oversample) per round
    few_shot: int = Field(default=3, ge=0)
    sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64)
    skip_labels: tuple[str, ...] = ("None", "Unknown")


class DedupSpec(_Strict):
    """SimHash fingerprints, and the rule that makes two prompts near-duplicates
    (``tasks/dedup/verify.py``): candidates within Hamming ``tau + candidate_margin``, or
    within ``short_text_radius`` when the shorter prompt has at most ``short_text_words``
    words, kept when their word multisets differ by at most
    ``max(min_word_edits, floor(word_edit_share * longer length))`` words.  ``tau`` alone
    is the radius where no text is at hand (the split's leakage check on fingerprints)."""

    method: Literal["simhash", "minhash"] = "simhash"
    bits: int = Field(default=64, ge=8, le=64)
    shingle: Literal["word", "char"] = "word"
    ngram: int = Field(default=1, ge=1)
    weighting: Literal["idf", "tf"] = "idf"
    tau: int = Field(default=10, ge=0, le=32)
    candidate_margin: int = Field(default=2, ge=0, le=32)
    short_text_words: int = Field(default=20, ge=0)
    short_text_radius: int = Field(default=16, ge=0, le=32)
    min_word_edits: int = Field(default=2, ge=0)
    word_edit_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    minhash_threshold: float = Field(default=0.8, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _radii_fit_the_fingerprint(self) -> DedupSpec:
        for name, radius in (("tau + candidate_margin", self.tau + self.candidate_margin),
                             ("short_text_radius", self.short_text_radius)):
            if radius > self.bits:
                raise ValueError(f"{name} ({radius}) exceeds the fingerprint's {self.bits} bits")
        return self


class ResponseFilterSpec(_Strict):
    min_words: int = Field(default=3, ge=0)
    max_prompt_echo: float = Field(default=0.8, gt=0.0, le=1.0)  # share of response shingles copied from the prompt
    min_english_share: float = Field(default=0.6, ge=0.0, le=1.0)
    near_duplicate_tau: int = Field(default=3, ge=0, le=32)
    reject_truncated: bool = True  # a response that hit max_tokens is cut off mid-answer
    # Targets for which a refusal is a failure (a harmless or aligned answer may refuse).
    refusal_rejected_for: tuple[str, ...] = ("helpful", "honest", "misaligned")


class ResponseSpec(_Strict):
    mode: str  # a kind of Stage II registered in tasks/kinds.py (hhh, aligned_misaligned, raters)
    targets: tuple[str, ...]
    candidates: int = Field(default=3, ge=1)  # K per target
    feedback_iterations: int = Field(default=2, ge=0)
    judge_threshold: float = Field(default=7.0, ge=0.0, le=10.0)  # judge scores 1-10
    # json: the judge writes {"score", "critique"}; choice: the score is the expectation over
    # the probabilities of "1".."10" (for small models that cannot write JSON).
    judge_mode: Literal["json", "choice"] = "json"
    require_pass: bool = True  # a prompt without a passing response for every target leaves
    sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=512)
    judge_sampling: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=128)
    filters: ResponseFilterSpec = ResponseFilterSpec()
    rating_scale: tuple[str, ...] = ("Yes", "No", "Unsure")  # raters: "is the conversation unsafe?"


class SplitSpec(_Strict):
    fractions: dict[str, float] = {"train": 0.9, "test": 0.1}
    stratify_by: str | None = None  # a dimension name
    heldout: str | None = None  # optional evaluation-set file checked for leakage

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitSpec:
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions sum to {sum(self.fractions.values())}, not 1")
        if "train" not in self.fractions:
            raise ValueError("splits need a 'train' split (leaking items are dropped from it)")
        return self


class DatasetSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    title: str
    description: str
    paper: str
    license: str
    version: int = Field(default=1, ge=1)  # bump when the spec's meaning changes
    source: SourceSpec
    dimensions: tuple[DimensionSpec, ...] = Field(min_length=1)
    models: RoleModels
    classification: ClassificationSpec = ClassificationSpec()
    expansion: ExpansionSpec
    dedup: DedupSpec = DedupSpec()
    responses: ResponseSpec
    splits: SplitSpec = SplitSpec()
    seed: int = 42
    shard_size: int = Field(default=256, ge=1)
    paper_size: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError("dimension names repeat")
        if self.expansion.dimension not in names:
            raise ValueError(f"expansion.dimension {self.expansion.dimension!r} is not one of {names}")
        unknown_required = set(self.classification.require_label) - set(names)
        if unknown_required:
            raise ValueError(f"classification.require_label names unknown dimensions {sorted(unknown_required)}")
        if self.splits.stratify_by and self.splits.stratify_by not in names:
            raise ValueError(f"splits.stratify_by {self.splits.stratify_by!r} is not one of {names}")
        return self

    def dimension(self, name: str) -> DimensionSpec:
        return next(d for d in self.dimensions if d.name == name)
