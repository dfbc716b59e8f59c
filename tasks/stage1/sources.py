"""Stage I, step 1: read a source (bundled sample or the real dataset) into prompt rows.

Every source row is either loaded or rejected with a reason; nothing is dropped silently.
A file that is wholly wrong (unknown format, missing the text column) fails early with a
message naming the file, the expected and the found columns.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import SourceFingerprint
from schemas.records import ORIGIN_SOURCE, annotation_schema, prompt_schema
from schemas.spec import ColumnRule, DatasetSpec, SourceSpec
from tasks.core import StepResult, make_rejects, stable_id

# C0/C1 control characters other than tab and newline corrupt prompts and templates.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATES = re.compile(r"[\udc80-\udcff]")  # bytes that were not valid UTF-8 (surrogateescape)
_PYTHON_TYPES = {"string": str, "int64": int, "float64": float, "bool": bool}


class SourceFormatError(ValueError):
    """The source file cannot be read as the spec says (format or columns)."""


@dataclass
class LoadedSource:
    prompts: pa.Table
    rejects: pa.Table
    annotations: pa.Table | None
    fingerprint: SourceFingerprint
    rows_read: int
    stats: dict[str, int] = field(default_factory=dict)

    def step_result(self) -> StepResult:
        """The load as a step: rows read = rows kept + rows rejected, where a kept row is a
        prompt, or, for sources grouped by conversation (DICES), an annotation row."""
        kept_units = self.annotations.num_rows if self.annotations is not None else self.prompts.num_rows
        side = {"annotations": self.annotations} if self.annotations is not None else {}
        return StepResult(kept=self.prompts, rejects=self.rejects, stats=dict(self.stats), side=side,
                          kept_units=kept_units)


def load_source(spec: DatasetSpec, project_root: Path, *, real: bool, limit: int | None = None) -> LoadedSource:
    source = spec.source
    if real:
        rows, fingerprint = _read_real(source)
    else:
        path = project_root / source.sample
        rows, fingerprint = _read_file(path, source.format), _file_fingerprint(path)
    return build_prompts(spec, rows, fingerprint, limit=limit)


def build_prompts(spec: DatasetSpec, rows: Iterator[tuple[int, Any]], fingerprint: SourceFingerprint, *, limit: int | None = None) -> LoadedSource:
    """Validate raw rows and turn them into the prompt table (plus annotations when grouped)."""
    source = spec.source
    dimensions = [d.name for d in spec.dimensions]
    keep_types = {name: rule.type for name, rule in source.keep_columns.items()}
    prompts: dict[str, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    rows_read = 0
    columns_seen: set[str] = set()

    valid: list[tuple[int, dict[str, Any], str, str | None, str]] = []
    for row_number, raw in rows:
        rows_read += 1
        record_id = f"{source.name}:row{row_number}"
        if not isinstance(raw, dict):
            rejects.append(_reject(record_id, "not_an_object", f"row is {type(raw).__name__}"))
            continue
        columns_seen.update(raw)
        problem, text = _prompt_text(raw, source)
        if problem is None:
            problem = _check_columns(raw, source.keep_columns) or _check_columns(raw, source.annotation_columns)
        if problem:
            rejects.append(_reject(record_id, problem[0], problem[1], text=text))
            continue
        source_id = _source_id(raw, source)
        prompt_id = stable_id(source.name, source_id if source_id is not None else f"row{row_number}")
        valid.append((row_number, raw, text, source_id, prompt_id))

    # Rows of one id must agree on the text; the majority text wins (ties: the first seen),
    # so one corrupt row cannot take its whole group down with it.
    texts_by_id: dict[str, Counter[str]] = {}
    for _, _, text, _, prompt_id in valid:
        texts_by_id.setdefault(prompt_id, Counter())[text] += 1
    for row_number, raw, text, source_id, prompt_id in valid:
        record_id = f"{source.name}:row{row_number}"
        existing = prompts.get(prompt_id)
        if existing is not None and not source.annotation_columns:
            rejects.append(_reject(record_id, "duplicate_source_id", f"id {source_id!r} already loaded", related=prompt_id, text=text))
            continue
        if text != texts_by_id[prompt_id].most_common(1)[0][0]:
            rejects.append(_reject(record_id, "conflicting_text", f"id {source_id!r}: other rows of this id have another text",
                                   related=prompt_id, text=text[:200]))
            continue
        if existing is None:
            if limit is not None and len(prompts) >= limit:
                rejects.append(_reject(record_id, "over_limit", f"build limited to {limit} prompts"))
                continue
            prompts[prompt_id] = _prompt_row(prompt_id, text, source_id, row_number, raw, keep_types, dimensions)
        if source.annotation_columns:
            annotations.append({"prompt_id": prompt_id, "source_row": row_number, **{
                name: _coerce(raw.get(name), rule.type) for name, rule in source.annotation_columns.items()
            }})

    if source.text_column not in columns_seen and not source.text_template and rows_read:
        raise SourceFormatError(
            f"{fingerprint.location}: expected a column {source.text_column!r}; found {sorted(columns_seen)}"
        )
    if source.text_template:
        needed = {f for _, f, _, _ in string.Formatter().parse(source.text_template) if f}
        if rows_read and not needed <= columns_seen:
            raise SourceFormatError(
                f"{fingerprint.location}: text_template needs columns {sorted(needed)}; found {sorted(columns_seen)}"
            )
    schema = prompt_schema(dimensions, keep_types)
    table = pa.Table.from_pylist(list(prompts.values()), schema=schema)
    annotation_table = (
        pa.Table.from_pylist(annotations, schema=annotation_schema({n: r.type for n, r in source.annotation_columns.items()}))
        if source.annotation_columns else None
    )
    stats = {"rows_read": rows_read, "prompts": table.num_rows, "rejected_rows": len(rejects),
             "annotations": len(annotations)}
    return LoadedSource(table, make_rejects(rejects), annotation_table, fingerprint, rows_read, stats)


def _prompt_text(raw: dict[str, Any], source: SourceSpec) -> tuple[tuple[str, str] | None, str | None]:
    if source.text_template:
        values = {}
        for _, name, _, _ in string.Formatter().parse(source.text_template):
            if name is None:
                continue
            value = raw.get(name)
            if not isinstance(value, str) or not value.strip():
                return ("missing_value", f"column {name!r} is empty or not text"), None
            values[name] = value
        text = source.text_template.format_map(values)
    else:
        if source.text_column not in raw:
            return ("missing_column", f"no {source.text_column!r} column"), None
        text = raw[source.text_column]
        if not isinstance(text, str):
            return ("not_a_string", f"{source.text_column!r} is {type(text).__name__}"), None
    if _SURROGATES.search(text):
        return ("invalid_utf8", "text holds bytes that are not UTF-8"), None
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return ("empty_text", "text is empty or whitespace"), None
    if _CONTROL_CHARACTERS.search(text):
        return ("control_characters", "text holds control characters"), text[:200]
    if len(text) > source.max_chars:
        return ("too_long", f"{len(text)} characters > {source.max_chars}"), text[:200]
    return None, text


def _check_columns(raw: dict[str, Any], rules: dict[str, ColumnRule]) -> tuple[str, str] | None:
    for name, rule in rules.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if rule.required:
                return "missing_value", f"column {name!r} is empty"
            continue
        if rule.type != "string" and _coerce(value, rule.type) is None:
            return "invalid_value", f"column {name!r}: {value!r} is not {rule.type}"
        if rule.allowed is not None and str(value) not in rule.allowed:
            return "invalid_value", f"column {name!r}: {value!r} not in {list(rule.allowed)}"
    return None


def _coerce(value: Any, kind: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if kind == "bool" and isinstance(value, str):
            return {"true": True, "false": False, "1": True, "0": False}[value.strip().lower()]
        if kind in ("int64", "float64") and isinstance(value, bool):
            return None
        if kind == "int64" and isinstance(value, float) and not value.is_integer():
            return None
        return _PYTHON_TYPES[kind](value if kind != "int64" or not isinstance(value, str) else float(value))
    except (ValueError, KeyError, TypeError):
        return None


def _source_id(raw: dict[str, Any], source: SourceSpec) -> str | None:
    if not source.id_column or raw.get(source.id_column) in (None, ""):
        return None
    return str(raw[source.id_column])


def _prompt_row(prompt_id: str, text: str, source_id: str | None, row_number: int, raw: dict[str, Any],
                keep_types: dict[str, str], dimensions: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt_id": prompt_id, "text": text, "origin": ORIGIN_SOURCE, "source_id": source_id,
        "source_row": row_number, "parent_ids": [], "generator_model": None, "expansion_round": 0, "simhash": None,
    }
    for dimension in dimensions:
        row.update({f"{dimension}_label": None, f"{dimension}_id": None, f"{dimension}_score": None,
                    f"{dimension}_labels": None, f"{dimension}_raw": None})
    row.update({name: _coerce(raw.get(name), kind) for name, kind in keep_types.items()})
    return row


def _reject(record_id: str, reason: str, detail: str, *, related: str | None = None, text: str | None = None) -> dict[str, Any]:
    return {"record_id": record_id, "unit": "source_row", "stage": "load", "reason": reason, "detail": detail,
            "related_id": related, "text": text}


def _read_file(path: Path, kind: str) -> Iterator[tuple[int, Any]]:
    if not path.is_file():
        raise SourceFormatError(f"source file {path} does not exist")
    if kind == "jsonl":
        return _read_jsonl(path)
    if kind == "csv":
        return _read_csv(path)
    return _read_parquet(path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                if number == 0:
                    raise SourceFormatError(f"{path}: first line is not JSON ({error}); expected JSON lines") from error
                yield number, f"<invalid JSON: {error}>"


def _read_csv(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise SourceFormatError(f"{path}: empty CSV, no header")
        for number, row in enumerate(reader):
            if None in row:  # more fields than the header: the row is malformed
                yield number, f"<row with {len(row[None]) + len(reader.fieldnames)} fields>"
                continue
            yield number, row


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as error:
        raise SourceFormatError(f"{path}: not a Parquet file ({error})") from error
    yield from enumerate(table.to_pylist())


def _file_fingerprint(path: Path) -> SourceFingerprint:
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return SourceFingerprint(kind="sample", location=str(path.name), sha256=digest.hexdigest(), rows=lines)


def _read_real(source: SourceSpec) -> tuple[Iterator[tuple[int, Any]], SourceFingerprint]:
    """The real source through `datasets` (hub id, gated: needs HF_TOKEN / login) or a file URL."""
    import datasets

    real = source.real
    if real.hub_id:
        dataset = datasets.load_dataset(real.hub_id, real.config, split=real.split)
        location = f"{real.hub_id}:{real.config or 'default'}:{real.split}"
    else:
        builder = {"jsonl": "json", "csv": "csv", "parquet": "parquet"}[source.format]
        dataset = datasets.load_dataset(builder, data_files=real.url, split="train")
        location = str(real.url)
    fingerprint = SourceFingerprint(kind="hub" if real.hub_id else "url", location=location,
                                    sha256=dataset._fingerprint, rows=dataset.num_rows)
    return enumerate(iter(dataset)), fingerprint
