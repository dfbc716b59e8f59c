"""A release published by a dataset's authors, as a version of our store: the same configs
and columns as our builds, so the benchmark runs on it as on a build and `alignforge diff`
can compare the two (pure: loaded rows in, tables out).

The release is read by the source loader in the authors' column layout (CULTURAX:
`Question, class, domain, helpful_response, harmless_response, honest_response,
simhash_id, pass_hhh`), so its encodings, ids and bad rows are handled as a build's source
rows are. Then:

- `domain` must be a label of the dataset's taxonomy (otherwise the row leaves:
  `unknown_label`); `class` becomes the taxonomy's id for it, the authors' own value is
  kept as `source_class`;
- `simhash` is our 64-bit fingerprint of the question; the authors' `simhash_id` is not a
  fingerprint (a spreadsheet wrote it as `1.43E+19`) and is kept, as written, as
  `source_simhash_id`;
- each response becomes a row of the `responses` config, tied to its prompt id and the
  digest of the question it answers; `pass_hhh` is the authors'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas.records import RESPONSE_SCHEMA, TEXT_COLUMN
from schemas.spec import ColumnRule, DatasetSpec, RealSource, SourceSpec
from schemas.taxonomy import Taxonomy
from tasks.config import ConfigError
from tasks.core import StepResult, make_rejects, stable_id, text_sha
from tasks.dedup.near_duplicates import Fingerprinter
from tasks.stage1.source_files import FORMAT_BY_SUFFIX
from tasks.stage1.sources import LoadedSource, kept_column_names

IMPORT_STAGE = "import"
# Who wrote an imported response, where our builds name the generator model.
AUTHORS = "authors-release"
AUTHORS_TEXT_COLUMN = "Question"
AUTHORS_SIMHASH = "simhash_id"
# The authors' columns whose names our values take, and where theirs are kept.
KEPT_AS = {"class": "source_class", AUTHORS_SIMHASH: "source_simhash_id"}


@dataclass(frozen=True)
class ImportedRelease:
    default: pa.Table
    responses: pa.Table
    step: StepResult  # the import as a step over the loaded prompts: kept (the prompts published) and rejected


def authors_layout(spec: DatasetSpec, location: str, encoding: str | None) -> DatasetSpec:
    """`spec` with the authors' release at `location` as its source, in their column layout."""
    if spec.responses.mode != "hhh":
        raise ConfigError(f"{spec.name}: import reads releases in the CULTURAX layout (responses.mode hhh); "
                          f"this dataset's mode is {spec.responses.mode}")
    columns = {"class": ColumnRule(required=False), "domain": ColumnRule(),
               **{f"{target}_response": ColumnRule() for target in spec.responses.targets},
               AUTHORS_SIMHASH: ColumnRule(required=False), "pass_hhh": ColumnRule(type="bool", required=False)}
    source = SourceSpec(
        name=f"{spec.name}_authors_release", real=RealSource(path=location, license=spec.source.real.license),
        sample=location, format=FORMAT_BY_SUFFIX.get(Path(location).suffix.lower(), "csv"),
        text_column=AUTHORS_TEXT_COLUMN, keep_columns=columns, encoding=encoding, max_chars=spec.source.max_chars)
    return spec.model_copy(update={"source": source})


def imported_release(loaded: LoadedSource, spec: DatasetSpec, taxonomy: Taxonomy,
                     fingerprinter: Fingerprinter) -> ImportedRelease:
    """The release's configs from its loaded rows; `spec` is `authors_layout`'s, `taxonomy`
    the one of its (single) labelled dimension."""
    names = kept_column_names(spec)
    dimension = spec.dimensions[0].name
    domains = loaded.prompts[names["domain"]].to_pylist()
    known = [domain in taxonomy.output_labels for domain in domains]
    prompts = loaded.prompts.filter(pa.array(known, pa.bool_()))
    rejects = make_rejects(
        {"record_id": prompt_id, "unit": "prompt", "stage": IMPORT_STAGE, "reason": "unknown_label",
         "detail": f"domain {domain!r} is not a label of taxonomy {taxonomy.name}", "text": text[:200]}
        for prompt_id, domain, text, keep in zip(loaded.prompts["prompt_id"].to_pylist(), domains,
                                                 loaded.prompts["text"].to_pylist(), known, strict=True) if not keep)
    labels = prompts[names["domain"]].to_pylist()
    fingerprints = pa.array(fingerprinter(prompts["text"].to_pylist()), pa.uint64())
    prompts = (prompts
               .set_column(prompts.column_names.index(f"{dimension}_label"), f"{dimension}_label", pa.array(labels, pa.string()))
               .set_column(prompts.column_names.index(f"{dimension}_id"), f"{dimension}_id",
                           pa.array([taxonomy.label_id(label) for label in labels], pa.int32()))
               .set_column(prompts.column_names.index(f"{dimension}_labels"), f"{dimension}_labels",
                           pa.array([[label] for label in labels], pa.list_(pa.string())))
               .set_column(prompts.column_names.index("simhash"), "simhash", fingerprints))
    responses = _responses(prompts, spec, names)
    return ImportedRelease(_default(prompts, responses, spec, names), responses, StepResult(kept=prompts, rejects=rejects))


def _responses(prompts: pa.Table, spec: DatasetSpec, names: dict[str, str]) -> pa.Table:
    rows = [
        {"response_id": stable_id(prompt_id, AUTHORS, target), "prompt_id": prompt_id, "prompt_sha": text_sha(text),
         "target": target, "generator_model": AUTHORS, "template_sha": AUTHORS, "attempt": 0, "feedback_round": 0,
         "text": response, "passed": True}
        for target in spec.responses.targets
        for prompt_id, text, response in zip(prompts["prompt_id"].to_pylist(), prompts["text"].to_pylist(),
                                             prompts[names[f"{target}_response"]].to_pylist(), strict=True)
    ]
    return pa.Table.from_pylist(sorted(rows, key=lambda r: r["prompt_id"]), schema=RESPONSE_SCHEMA)


def _default(prompts: pa.Table, responses: pa.Table, spec: DatasetSpec, names: dict[str, str]) -> pa.Table:
    """One row per question in the authors' order of columns, as our CULTURAX builds publish it."""
    dimension = spec.dimensions[0].name
    ordered = prompts.sort_by("prompt_id")
    response_ids = {(r["prompt_id"], r["target"]): r["response_id"]
                    for r in responses.select(["prompt_id", "target", "response_id"]).to_pylist()}
    ids = ordered["prompt_id"].to_pylist()
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        TEXT_COLUMN["hhh"]: ordered["text"], "class": ordered[f"{dimension}_id"], "domain": ordered[f"{dimension}_label"],
        **{f"{t}_response": ordered[names[f"{t}_response"]] for t in spec.responses.targets},
        "simhash": ordered["simhash"], "pass_hhh": ordered[names["pass_hhh"]], "prompt_id": ordered["prompt_id"],
        "generator_model": pa.array([AUTHORS] * len(ids), pa.string()),
        f"{dimension}_labels": ordered[f"{dimension}_labels"],
        **{kept_as: ordered[names[column]] for column, kept_as in KEPT_AS.items()},
        "origin": ordered["origin"], "source_row": ordered["source_row"],
        **{f"{t}_response_id": pa.array([response_ids[(pid, t)] for pid in ids], pa.string())
           for t in spec.responses.targets},
    }
    return pa.table(columns)
