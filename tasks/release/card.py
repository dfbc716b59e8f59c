"""The dataset card: a Hugging Face README that says what a version holds and how it was made.

The YAML front matter is built with huggingface_hub's own ``DatasetCardData`` so the Hub
(and ``datasets.load_dataset``) read it as they read any card; its ``configs`` point at
the store's shard files. The body is written from the manifest, so every number in it is
the number of this version, and from the spec, so every parameter and every choice the
papers left open is on record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from huggingface_hub import DatasetCardData

from schemas.manifest import SOURCE_KIND_IMPORT, Manifest, SourceFingerprint
from schemas.spec import DatasetSpec
from schemas.taxonomy import Taxonomy
from tasks.dedup.near_duplicates import describe_rule
from tasks.release.layout import DATA_FOLDER

# The Hub's size buckets (datasets/utils/resources/size_categories.json), by upper bound.
_SIZE_BUCKETS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]
_DEFAULT_CONFIG = "default"
# Keys of Manifest.domain_counts[dimension]: label counts before and after expansion.
_BEFORE, _AFTER, _PUBLISHED = "before", "after", "published"
# Spec sections whose every field is a build parameter.
_PARAMETER_SECTIONS = ("classification", "expansion", "dedup", "responses", "splits")


def size_category(rows: int) -> str:
    for bound, label in _SIZE_BUCKETS:
        if rows < bound:
            return label
    return "n>1T"


def data_files_pattern(config: str, split: str) -> str:
    return f"{DATA_FOLDER}/{config}/{split}-*.parquet"


def _configs_default_first(manifest: Manifest) -> list[str]:
    return sorted(manifest.splits, key=lambda config: config != _DEFAULT_CONFIG)


def card_metadata(manifest: Manifest, spec: DatasetSpec, task_categories: Iterable[str] = ()) -> DatasetCardData:
    """The YAML front matter: licence, tasks, size, and one ``configs`` entry per config."""
    largest_config = max((sum(splits.values()) for splits in manifest.splits.values()), default=0)
    # Every prompt carries domain labels; the kind of Stage II adds its own categories.
    task_categories = list(dict.fromkeys(["text-classification", *task_categories]))
    configs = []
    for config in _configs_default_first(manifest):
        entry: dict[str, Any] = {
            "config_name": config,
            "data_files": [
                {"split": split, "path": data_files_pattern(config, split)} for split in manifest.splits[config]
            ],
        }
        if config == _DEFAULT_CONFIG:
            entry["default"] = True
        configs.append(entry)
    # The Hub asks for a licence id and a link when the licence is not a standard one.
    custom_licence = (
        {"license_name": f"{spec.name.replace('_', '-')}-source-terms", "license_link": _source_link(spec)}
        if spec.license == "other"
        else {}
    )
    tags = ["alignment", "llm-alignment", *(d.name for d in spec.dimensions), spec.responses.mode]
    if spec.expansion.enabled:
        tags.append("synthetic")
    return DatasetCardData(
        pretty_name=spec.title,
        license=spec.license,
        language=["en"],
        multilinguality="monolingual",
        task_categories=task_categories,
        size_categories=[size_category(largest_config)],
        # Only a build that read a hub dataset extends it; a sample or file build names its source in the body.
        source_datasets=[f"extended|{hub_dataset_read(manifest.source)}"] if manifest.source.kind == "hub" else None,
        annotations_creators=["machine-generated"],
        language_creators=["found", "machine-generated"] if spec.expansion.enabled else ["found"],
        tags=list(dict.fromkeys(tags)),
        configs=configs,
        **custom_licence,
    )


def _source_link(spec: DatasetSpec) -> str:
    real = spec.source.real
    if real.hub_id:
        return f"https://huggingface.co/datasets/{real.hub_id}"
    return real.homepage or real.url or str(real.path)


def render_card(
    manifest: Manifest,
    spec: DatasetSpec,
    taxonomies: Mapping[str, Taxonomy],
    *,
    repo_id: str | None = None,
    task_categories: Iterable[str] = (),
) -> str:
    """The README.md of one version.

    ``spec`` is the spec this build ran with (after the profile's overrides);
    ``taxonomies`` maps each dimension name to its resolved taxonomy (as the build's
    step context does); ``repo_id``, when known, goes into the loading snippet;
    ``task_categories`` are those of its kind of Stage II, beside text classification.
    """
    missing = [d.name for d in spec.dimensions if d.name not in taxonomies]
    if missing:
        raise KeyError(f"render_card needs the taxonomies of dimensions {missing}")
    for dimension, counts in manifest.domain_counts.items():
        if not set(counts) <= {_BEFORE, _AFTER, _PUBLISHED}:
            raise ValueError(
                f"manifest.domain_counts[{dimension!r}] has keys {sorted(counts)}; the manifest schema "
                f"expects {_BEFORE!r}, {_AFTER!r} and {_PUBLISHED!r}"
            )
    # An imported release was not built here: no expansion, models, parameters or choices of ours to report.
    built = manifest.source.kind != SOURCE_KIND_IMPORT
    sections = [
        _summary(manifest, spec),
        _sample_warning(manifest, spec),
        _import_notice(manifest),
        _paper_and_source(manifest, spec),
        *(_taxonomy_section(manifest, d.name, taxonomies[d.name]) for d in spec.dimensions),
        *([_expansion_section(manifest, spec), _dedup_and_leakage(manifest, spec)] if built else []),
        _stage_section(manifest),
        *([_models_section(manifest), _parameters_section(spec), _open_choices_section(manifest)] if built else []),
        _loading_section(manifest, repo_id),
        _files_section(manifest),
        _reproduce_section(manifest),
    ]
    body = "\n\n".join(section for section in sections if section)
    return f"---\n{card_metadata(manifest, spec, task_categories).to_yaml()}\n---\n\n{body}\n"


# ---- markdown helpers ------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return "\n".join(lines)


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}", inner)
    elif isinstance(value, (list, tuple)):
        yield prefix, ", ".join(str(item) for item in value) if value else "(none)"
    else:
        yield prefix, value


# ---- sections -------------------------------------------------------------------------


def _summary(manifest: Manifest, spec: DatasetSpec) -> str:
    rows = [(config, split, n) for config, splits in manifest.splits.items() for split, n in splits.items()]
    paper_size = (
        f"\n\nThe paper reports {spec.paper_size:,} rows; this version has "
        f"{sum(manifest.splits.get(_DEFAULT_CONFIG, {}).values()):,} in its default config."
        if spec.paper_size
        else ""
    )
    return (
        f"# {spec.title}\n\n{spec.description.strip()}\n\n"
        f"Version `{manifest.version}` of `{manifest.dataset}`, built {manifest.created_at} by alignforge "
        f"{manifest.alignforge_version}{_code_origin(manifest)} with profile `{manifest.profile}` in "
        f"{manifest.wall_seconds:,.0f} s."
        f"{paper_size}\n\n" + _table(["config", "split", "rows"], rows)
    )


def _code_origin(manifest: Manifest) -> str:
    return f" (git commit `{manifest.git_commit}`)" if manifest.git_commit else ""


def _sample_warning(manifest: Manifest, spec: DatasetSpec) -> str:
    if manifest.source.kind != "sample":
        return ""
    real = spec.source.real.where
    return (
        "> **This is a synthetic-sample build, not the real dataset.** It was built from the small sample "
        f"`{manifest.source.location}` bundled with alignforge instead of the real source ({real}), under "
        f"profile `{manifest.profile}`. It shows the format and the pipeline; its rows and numbers are not "
        f"{spec.title} and must not be compared with the paper."
    )


def _import_notice(manifest: Manifest) -> str:
    if manifest.source.kind != SOURCE_KIND_IMPORT:
        return ""
    return (
        "> **This version is the authors' own release, imported, not built by alignforge.** It holds the rows "
        f"of `{manifest.source.location}` (sha256 `{manifest.source.sha256}`) in the layout of alignforge's "
        "builds, so benchmarks and `alignforge diff` treat it as one. `domain` is the authors' label (a label "
        "outside the taxonomy left, `unknown_label`); `class` is the taxonomy's id for it (the authors' value is "
        "`source_class`); `simhash` is alignforge's 64-bit fingerprint of the question (the authors' `simhash_id` "
        "is kept as written in `source_simhash_id`); responses and `pass_hhh` are as released, without judge "
        "scores; every response carries its question's id and text digest (config `responses`)."
    )


def _paper_and_source(manifest: Manifest, spec: DatasetSpec) -> str:
    real = spec.source.real
    licence = (
        f"No standard licence applies: the rows carry the terms of their source ({_source_link(spec)}), "
        f"whose licence is: {real.license}. Check those terms before reuse."
        if spec.license == "other"
        else f"`{spec.license}`; the source's licence is: {real.license}."
    )
    details = [
        ("real source", f"[{real.where}]({_source_link(spec)})"),
        ("source config / split", f"{real.config or '(default)'} / {real.split}"),
        ("source licence", real.license),
        ("gated", "yes" if real.gated else "no"),
        ("built from", source_read(manifest.source)),
        ("source rows read", manifest.source.rows),
        *_source_reading(manifest),
    ]
    return (
        f"## Paper\n\n{spec.paper.strip()}\n\n## Licence\n\n{licence}\n\n## Source\n\n"
        + _table(["", ""], details)
    )


def _source_reading(manifest: Manifest) -> list[tuple[str, Any]]:
    """How the source files were read: files, the encoding decision, renamed columns."""
    source = manifest.source
    if not source.files:
        return []
    encodings = sorted({f.encoding for f in source.files})
    decision = ", ".join(encodings)
    if source.rows_decoded_with_fallback:
        decision += (f"; {source.rows_decoded_with_fallback:,} rows were not UTF-8 and were decoded as "
                     f"{source.fallback_encoding}")
    rows = [("source files", len(source.files)), ("encoding", decision)]
    if source.skipped_files:
        rows.append(("files skipped (not data)", ", ".join(source.skipped_files)))
    if source.column_renames:
        rows.append(("source columns renamed", ", ".join(f"`{a}` -> `{b}`" for a, b in source.column_renames.items())))
    header_renames = [f"{f.path} {where} -> `{name}`" for f in source.files for where, name in f.header_renames.items()]
    if header_renames:
        rows.append(("header names given", "; ".join(header_renames)))
    return rows


def source_read(source: SourceFingerprint) -> str:
    """What the build actually read: the bundled sample, a file, or a hub dataset at a commit."""
    if source.kind == "sample":
        return f"the synthetic sample `{source.location}` bundled with alignforge (sha256 `{source.sha256}`)"
    if source.kind == "hub":
        return f"hub dataset `{source.location}` at revision `{source.revision or 'unrecorded'}`"
    what = {"path": "the file(s)", "url": "the download of", SOURCE_KIND_IMPORT: "the authors' release"}.get(
        source.kind, source.kind)
    return f"{what} `{source.location}` (sha256 `{source.sha256}`)"


def hub_dataset_read(source: SourceFingerprint) -> str:
    """The hub id of a hub read, whether the spec or `--source` named it (location `id:config:split`)."""
    return source.location.split(":", 1)[0]


def _taxonomy_section(manifest: Manifest, dimension: str, taxonomy: Taxonomy) -> str:
    counts = manifest.domain_counts.get(dimension, {})
    phases = [counts.get(_BEFORE, {}), counts.get(_AFTER, {}), counts.get(_PUBLISHED, {})]
    specials = [s for s in (taxonomy.none, taxonomy.unknown) if s is not None]
    rows = [(d.id, d.name, d.group, d.paper_count, *(phase.get(d.name, 0) for phase in phases)) for d in taxonomy.domains]
    rows += [(s.id, s.name, "(outside the taxonomy)", None, *(phase.get(s.name, 0) for phase in phases))
             for s in specials]
    known = {d.name for d in taxonomy.domains} | {s.name for s in specials}
    strays = sorted(set().union(*phases) - known)
    rows += [(None, name, "(not a label of this taxonomy)", None, *(phase.get(name, 0) for phase in phases))
             for name in strays]
    rows.append((None, "**total**", None, None, *(sum(phase.values()) for phase in phases)))
    sha = manifest.taxonomies.get(dimension)
    return (
        f"## Dimension `{dimension}`: {taxonomy.title}\n\n"
        f"Taxonomy `{taxonomy.name}` v{taxonomy.version} ({len(taxonomy.domains)} domains; source: "
        f"{taxonomy.source}{f'; sha256 `{sha}`' if sha else ''}).\n\n{_classifier_accuracy(manifest, dimension)}\n\n"
        "Counts are prompts per label before and after expansion, and in the published version (after Stage II).\n\n"
        + _table(["id", "domain", "group", "paper count", "before", "after", "published"], rows)
    )


def _classifier_accuracy(manifest: Manifest, dimension: str) -> str:
    measured = manifest.classifier_accuracy.get(dimension)
    if measured is None:
        return "The classifier's accuracy on held-out prompts of this taxonomy was not measured."
    class_mix = (
        f"; weighted by the authors' published class counts, {measured.class_mix_top1_accuracy:.3f} "
        f"(majority baseline {measured.class_mix_majority_baseline:.3f})"
        if measured.class_mix_top1_accuracy is not None and measured.class_mix_majority_baseline is not None
        else ""
    )
    return (
        f"Classifier: `{measured.engine}`, top-1 accuracy {measured.top1_accuracy:.3f} on {measured.prompts:,} "
        f"held-out written questions (majority baseline {measured.majority_baseline:.3f}){class_mix}. The "
        f"questions (`{measured.labelled_set}`) were written for alignforge, not drawn from the source; "
        "accuracy on the source's own prompts was not measured."
    )


def _expansion_section(manifest: Manifest, spec: DatasetSpec) -> str:
    if not spec.expansion.enabled:
        return "## Expansion\n\nExpansion was disabled for this dataset."
    outcomes = sorted(manifest.expansion, key=lambda o: o.domain)
    table = _table(
        ["domain", "before", "target", "reached", "rounds", "generated", "accepted", "met"],
        [(o.domain, o.before, o.target, o.reached, o.rounds, o.generated, o.accepted, "yes" if o.met else "**no**")
         for o in outcomes],
    )
    unmet = [o for o in outcomes if not o.met]
    verdict = (
        "Targets not met: " + "; ".join(f"{o.domain} ({o.reached} of {o.target})" for o in unmet) + "."
        if unmet
        else "Every target was met."
    )
    return (
        f"## Expansion\n\nLow-resource `{spec.expansion.dimension}` domains were topped up to "
        f"{spec.expansion.target_per_domain} prompts each with `{spec.models.expander}` "
        f"(at most {spec.expansion.max_rounds} rounds).\n\n{table}\n\n{verdict}"
    )


def _dedup_and_leakage(manifest: Manifest, spec: DatasetSpec) -> str:
    dedup_stages = [s for s in manifest.stages if "dedup" in s.stage]
    stage_rows = [
        (s.stage, s.rows_in, s.kept, s.rejected, ", ".join(f"{k}={v:g}" for k, v in sorted(s.stats.items())))
        for s in dedup_stages
    ]
    parts = [f"## Deduplication and leakage\n\nMethod: {describe_rule(spec.dedup)}."]
    if stage_rows:
        parts.append(_table(["stage", "rows in", "kept", "removed", "stats"], stage_rows))
    if manifest.leakage:
        parts.append(
            "Leakage between splits (share of test items within tau of a train item, and related counts):\n\n"
            + _table(["measure", "value"], sorted(manifest.leakage.items()))
        )
    else:
        parts.append("No leakage measures were recorded for this version.")
    return "\n\n".join(parts)


def _stage_section(manifest: Manifest) -> str:
    def by_reason(counts: dict[str, int]) -> str:
        return ", ".join(f"{reason}: {n:,}" for reason, n in sorted(counts.items())) or "-"

    rows = [
        (s.stage, s.unit, s.rows_in, s.added, s.kept, s.rejected, by_reason(s.rejected_by_reason),
         "-" if s.candidates_generated is None else
         f"{s.candidates_generated:,} generated, {s.candidates_kept:,} kept ({by_reason(s.candidates_rejected_by_reason)})",
         f"{s.wall_seconds:.1f}")
        for s in manifest.stages
    ]
    return "## Pipeline stages\n\nrows in + added = kept + rejected, in each stage's unit; candidates apart.\n\n" + _table(
        ["stage", "unit", "rows in", "added", "kept", "rejected", "rejected by reason", "candidates", "seconds"], rows
    )


def _models_section(manifest: Manifest) -> str:
    rows = [
        (m.role, f"`{m.spec_model}`", f"`{m.engine}`", m.requests, m.cache_hits, m.prompt_tokens,
         m.completion_tokens, m.errors, f"{m.seconds:.1f}")
        for m in manifest.models
    ]
    return (
        "## Models\n\nThe spec names the papers' models; the engine column says what actually ran.\n\n"
        + _table(["role", "spec model", "engine used", "requests", "cache hits", "prompt tokens",
                  "completion tokens", "errors", "seconds"], rows)
    )


def _parameters_section(spec: DatasetSpec) -> str:
    dumped = spec.model_dump(mode="json")
    rows = [row for section in _PARAMETER_SECTIONS for row in _flatten(section, dumped[section])]
    rows += [("seed", spec.seed), ("shard_size", spec.shard_size)]
    return "## Parameters\n\n" + _table(
        ["parameter", "value"], [(f"`{name}`", "(not set)" if value is None else value) for name, value in rows]
    )


def _open_choices_section(manifest: Manifest) -> str:
    if not manifest.open_choices:
        return "## Choices the papers left open\n\nNone recorded."
    return (
        "## Choices the papers left open\n\nWhere the papers did not publish a detail, this build chose:\n\n"
        + _table(["left open", "chosen"], sorted(manifest.open_choices.items()))
    )


def _loading_section(manifest: Manifest, repo_id: str | None) -> str:
    configs = _configs_default_first(manifest)
    lines = ["from datasets import load_dataset", ""]
    if repo_id:
        lines.append("# From the Hub, pinned to this version's tag:")
        lines += [f'{c} = load_dataset("{repo_id}", "{c}", revision="{manifest.version}")' for c in configs]
        lines.append("")
    lines.append("# From a local copy of this folder:")
    lines += [f'{c} = load_dataset("parquet", data_dir="{DATA_FOLDER}/{c}")' for c in configs]
    return "## Loading\n\n```python\n" + "\n".join(lines) + "\n```"


def _files_section(manifest: Manifest) -> str:
    total = sum(f.bytes for f in manifest.files)
    rows = [(f"`{f.path}`", f.rows, f.bytes, f"`{f.sha256}`") for f in sorted(manifest.files, key=lambda f: f.path)]
    return (
        f"## Files\n\n{len(manifest.files)} Parquet files (zstd), {total:,} bytes in all. "
        "`manifest.json` lists the same checksums; side tables (`rejects/`, `side/`) are not part of any config.\n\n"
        + _table(["file", "rows", "bytes", "sha256"], rows)
    )


def _reproduce_section(manifest: Manifest) -> str:
    rows = [("content key", f"`{manifest.content_key}`"), ("code sha256", f"`{manifest.code_sha256 or 'unrecorded'}`"),
            ("git commit", f"`{manifest.git_commit}`" if manifest.git_commit else "none (not built from a git checkout)"),
            ("seed", manifest.seed)]
    rows += [(f"template `{name}`", f"`{sha}`") for name, sha in sorted(manifest.templates.items())]
    return (
        "## Reproducing\n\nThe content key is a digest of the build's inputs, the code that shapes the data "
        "included; a build with the same key reuses this version instead of writing a new one.\n\n" + _table(["", ""], rows)
    )
