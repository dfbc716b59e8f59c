"""Stage I, step 1: read a source into prompt rows: the bundled sample, the spec's real
source, or the user's own copy named with `--source`.

Every source row is either loaded or rejected with a reason; nothing is dropped silently,
and a reject's detail names the file, the line (or row) and the column. A file that is
wholly wrong (unknown format, missing the text column) fails early with a message naming
the file, the expected and the found columns; a source that is not there fails with one
line saying what to set. How files are read (formats, encodings, row boundaries) is
`tasks.stage1.source_files`.
"""

from __future__ import annotations

import re
import shutil
import string
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.manifest import SourceFingerprint
from schemas.records import ORIGIN_SOURCE, SOURCE_PREFIX, annotation_schema, prompt_schema, release_columns
from schemas.spec import ColumnRule, DatasetSpec, SourceSpec
from tasks.config import ConfigError, alignforge_home
from tasks.core import StepResult, make_rejects, stable_id
from tasks.stage1.source_files import (
    DEFAULT_FALLBACK, FORMAT_BY_SUFFIX, SourceFormatError, SourceRow, SourceUnavailable, read_location,
)

__all__ = ["LoadedSource", "SourceFormatError", "SourceUnavailable", "build_prompts", "kept_column_names",
           "load_source"]

# C0/C1 control characters other than tab and newline corrupt prompts and templates.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # bytes that were not UTF-8 (surrogateescape), or bad escapes
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_INT64_RANGE = (-(2**63), 2**63 - 1)
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
DOWNLOAD_TIMEOUT_S = 60


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



def load_source(spec: DatasetSpec, project_root: Path, *, real: bool, limit: int | None = None,
                location: str | None = None, home: Path | None = None) -> LoadedSource:
    """`location` (`--source`: a file, folder, glob or hub id) replaces both the sample and the
    spec's real source; `home` holds relative real paths and downloads (`<home>/sources/`)."""
    if location is not None:
        rows, fingerprint = _read_given(spec, location)
    elif real:
        rows, fingerprint = _read_real(spec, home or alignforge_home())
    else:
        rows, fingerprint = _read_files(spec.source, project_root / spec.source.sample, "sample", spec.source.sample)
    return build_prompts(spec, rows, fingerprint, limit=limit)


def how_to_point(spec: DatasetSpec) -> str:
    """The one thing to do when a dataset's real source is not at hand."""
    homepage = spec.source.real.homepage
    where = f" from {homepage}" if homepage else ""
    return (f"download {spec.source.name}{where} and run `alignforge build {spec.name} --source PATH`, "
            f"or set source.real.path in its spec (README: Sources)")


def is_hub_id(location: str) -> bool:
    """`--source owner/name` names a hub dataset unless a file or folder of that name exists."""
    path = Path(location).expanduser()
    return bool(_HUB_ID.fullmatch(location)) and not path.exists() and path.suffix.lower() not in FORMAT_BY_SUFFIX


def _read_given(spec: DatasetSpec, location: str) -> tuple[Iterable[SourceRow], SourceFingerprint]:
    if is_hub_id(location):
        return _read_hub(spec, location, None, "train", None)
    path = Path(location).expanduser()
    try:
        return _read_files(spec.source, path, "path", str(path.absolute()))
    except SourceUnavailable as error:
        raise SourceUnavailable(f"{spec.name}: --source {error}") from error


def _read_real(spec: DatasetSpec, home: Path) -> tuple[Iterable[SourceRow], SourceFingerprint]:
    real = spec.source.real
    if real.hub_id:
        return _read_hub(spec, real.hub_id, real.config, real.split, real.revision)
    if real.url:
        downloaded = _download(spec, real.url, home / "sources" / spec.source.name)
        return _read_files(spec.source, downloaded, "url", real.url)
    path = real_path(spec, home)
    try:
        return _read_files(spec.source, path, "path", str(path))
    except SourceUnavailable as error:
        raise SourceUnavailable(f"{spec.name}: source not found: {error}; {how_to_point(spec)}") from error


def real_path(spec: DatasetSpec, home: Path) -> Path:
    """Where `source.real.path` points: a relative path is under `<home>/sources/`."""
    path = Path(str(spec.source.real.path)).expanduser()
    return path if path.is_absolute() else home / "sources" / path


def _read_files(source: SourceSpec, path: Path, kind: str, location: str) -> tuple[list[SourceRow], SourceFingerprint]:
    read = read_location(path, source.format, source.encoding)
    formats = [f.format for f in read.files]
    fallback = source.encoding or next((DEFAULT_FALLBACK[f] for f in formats if f in DEFAULT_FALLBACK), None)
    fingerprint = SourceFingerprint(
        kind=kind, location=location, sha256=read.sha256, rows=len(read.rows), fallback_encoding=fallback,
        rows_decoded_with_fallback=sum(f.rows_decoded_with_fallback for f in read.files), files=read.files,
        skipped_files=read.skipped)
    return read.rows, fingerprint


def _download(spec: DatasetSpec, url: str, folder: Path) -> Path:
    """The file at `url`, downloaded once into `folder`: that copy is what later builds read."""
    target = folder / (Path(urllib.parse.urlparse(url).path).name or "source")
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{target.name}.partial"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, partial.open("wb") as sink:
            shutil.copyfileobj(response, sink)
    except (OSError, ValueError) as error:  # URLError is an OSError
        partial.unlink(missing_ok=True)
        raise SourceUnavailable(f"{spec.name}: cannot download {url} ({error}); {how_to_point(spec)}") from error
    partial.replace(target)
    return target


def _read_hub(spec: DatasetSpec, hub_id: str, config: str | None, split: str,
              revision: str | None) -> tuple[Iterable[SourceRow], SourceFingerprint]:
    """A hub dataset through `datasets` (a gated one needs its terms accepted and HF_TOKEN), at
    `revision`, else at the head's commit, resolved first so the rows read and the revision
    recorded agree."""
    import datasets

    try:
        revision = revision or hub_dataset_commit(hub_id)
        dataset = datasets.load_dataset(hub_id, config, split=split, revision=revision)
    except Exception as error:  # offline, gated, unknown id: `datasets` raises many kinds; say what to do in one line
        message = (str(error).strip().splitlines() or [""])[0]
        gated = " (gated: accept its terms on the Hub and set HF_TOKEN)" if spec.source.real.gated else ""
        raise SourceUnavailable(f"{spec.name}: cannot load {hub_id} from the Hub{gated}: {type(error).__name__}: "
                                f"{message}; or {how_to_point(spec)}") from error
    location = f"{hub_id}:{config or 'default'}:{split}"
    rows = (SourceRow(location, number, values) for number, values in enumerate(dataset))
    return rows, SourceFingerprint(kind="hub", location=location, sha256=dataset._fingerprint, rows=dataset.num_rows,
                                   revision=revision)


def hub_dataset_commit(hub_id: str) -> str:
    from huggingface_hub import HfApi

    return HfApi().dataset_info(hub_id).sha


def build_prompts(spec: DatasetSpec, rows: Iterable[SourceRow], fingerprint: SourceFingerprint, *,
                  limit: int | None = None) -> LoadedSource:
    """Validate source rows and turn them into the prompt table (plus annotations when grouped)."""
    source = spec.source
    dimensions = [d.name for d in spec.dimensions]
    names = kept_column_names(spec)
    keep_types = {names[name]: rule.type for name, rule in source.keep_columns.items()}
    annotation_types = {names[name]: rule.type for name, rule in source.annotation_columns.items()}
    used_columns = _used_columns(source)
    text_columns = set(_text_columns(source))
    empty_labels = {f"{d}_{part}": None for d in dimensions for part in ("label", "id", "score", "labels", "raw")}
    several_files = len(fingerprint.files) > 1
    # In a folder of prompt sets each file numbers its own rows; grouped rows (DICES) name one
    # conversation across files.
    ids_per_file = several_files and not source.annotation_columns
    prompts: dict[str, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    rows_read = 0
    files_with_text: set[str] = set()
    columns_by_file: dict[str, set[str]] = {}  # of files where no row had the text column yet

    valid: list[tuple[SourceRow, str, str, str | None, str]] = []
    for row in rows:
        rows_read += 1
        record_id = f"{source.name}:{row.file}:row{row.number}" if several_files else f"{source.name}:row{row.number}"
        if row.problem:
            rejects.append(_reject(record_id, row.where, *row.problem, raw=row.raw))
            continue
        raw = row.values
        if not isinstance(raw, dict):
            rejects.append(_reject(record_id, row.where, "not_an_object", f"row is {type(raw).__name__}"))
            continue
        if row.file not in files_with_text:
            if text_columns <= raw.keys():
                files_with_text.add(row.file)
            else:
                columns_by_file.setdefault(row.file, set()).update(raw)
        problem = _unwritable_column(raw, used_columns)
        text = None
        if problem is None:
            problem, text = _prompt_text(raw, source)
        if problem is None:
            problem = _check_columns(raw, source.keep_columns) or _check_columns(raw, source.annotation_columns)
        if problem:
            rejects.append(_reject(record_id, row.where, *problem, text=text))
            continue
        source_id = _source_id(raw, row, source, ids_per_file)
        prompt_id = stable_id(source.name, source_id if source_id is not None else f"row{row.number}")
        valid.append((row, record_id, text, source_id, prompt_id))

    # Rows of one id must agree on the text; the majority text wins (ties: the first seen),
    # so one corrupt row cannot take its whole group down with it.
    first_text: dict[str, str] = {}
    texts_by_id: dict[str, Counter[str]] = {}  # ids seen more than once
    for _, _, text, _, prompt_id in valid:
        if prompt_id in first_text:
            texts_by_id.setdefault(prompt_id, Counter([first_text[prompt_id]]))[text] += 1
        else:
            first_text[prompt_id] = text
    majority = {prompt_id: texts.most_common(1)[0][0] for prompt_id, texts in texts_by_id.items()}
    for row, record_id, text, source_id, prompt_id in valid:
        existing = prompts.get(prompt_id)
        if existing is not None and not source.annotation_columns:
            rejects.append(_reject(record_id, row.where, "duplicate_source_id", f"id {source_id!r} already loaded",
                                   related=prompt_id, text=text))
            continue
        if text != majority.get(prompt_id, text):
            rejects.append(_reject(record_id, row.where, "conflicting_text",
                                   f"id {source_id!r}: other rows of this id have another text",
                                   related=prompt_id, text=text[:200]))
            continue
        if existing is None:
            if limit is not None and len(prompts) >= limit:
                rejects.append(_reject(record_id, row.where, "over_limit", f"build limited to {limit} prompts"))
                continue
            prompts[prompt_id] = _prompt_row(prompt_id, text, source_id, row.number, row.values, source, names,
                                             empty_labels)
        if source.annotation_columns:
            annotations.append({"prompt_id": prompt_id, "source_row": row.number, **{
                names[name]: _coerce(row.values.get(name), rule.type) for name, rule in source.annotation_columns.items()
            }})

    _check_files_have_text(source, fingerprint, {f: c for f, c in columns_by_file.items() if f not in files_with_text})
    table = pa.Table.from_pylist(list(prompts.values()), schema=prompt_schema(dimensions, keep_types))
    annotation_table = (pa.Table.from_pylist(annotations, schema=annotation_schema(annotation_types))
                        if source.annotation_columns else None)
    stats = {"rows_read": rows_read, "prompts": table.num_rows, "rejected_rows": len(rejects),
             "annotations": len(annotations), "rows_decoded_with_fallback": fingerprint.rows_decoded_with_fallback}
    loaded_fingerprint = fingerprint.model_copy(update={
        "rows": rows_read, "column_renames": {name: new for name, new in names.items() if name != new}})
    return LoadedSource(table, make_rejects(rejects), annotation_table, loaded_fingerprint, rows_read, stats)


def kept_column_names(spec: DatasetSpec) -> dict[str, str]:
    """Kept and annotation source columns -> their names in the prompt table and the release.
    A name the release writes itself gets the prefix `source_` (a source that carries the
    authors' `class` column keeps it as `source_class`), so no name is found twice at publish."""
    reserved = release_columns(spec)
    wanted = [*spec.source.keep_columns, *spec.source.annotation_columns]
    names: dict[str, str] = {}
    for name in wanted:
        if name not in reserved:
            names[name] = name
            continue
        renamed = SOURCE_PREFIX + name
        if renamed in reserved or renamed in wanted:
            raise ConfigError(f"spec {spec.name}: source column {name!r} is a column the release writes, and "
                              f"{renamed!r}, its renamed form, is taken too: keep only one of them")
        names[name] = renamed
    return names


def _text_columns(source: SourceSpec) -> list[str]:
    if source.text_template:
        return [name for _, name, _, _ in string.Formatter().parse(source.text_template) if name]
    return [source.text_column]


def _used_columns(source: SourceSpec) -> list[str]:
    """The columns whose values reach the tables (the others are never written), text first."""
    return [*_text_columns(source), *([source.id_column] if source.id_column else []), *source.keep_columns,
            *source.annotation_columns]


def _check_files_have_text(source: SourceSpec, fingerprint: SourceFingerprint,
                           columns_by_file: dict[str, set[str]]) -> None:
    """A file none of whose rows has the text column is the wrong file: fail, naming it."""
    several = len(fingerprint.files) > 1
    for file, columns in columns_by_file.items():
        where = f"{fingerprint.location}/{file}" if several else fingerprint.location
        if source.text_template:
            raise SourceFormatError(f"{where}: text_template needs columns {sorted(_text_columns(source))}; "
                                    f"found {sorted(columns)}")
        raise SourceFormatError(f"{where}: expected a column {source.text_column!r}; found {sorted(columns)}")


def _unwritable_column(raw: dict[str, Any], columns: list[str]) -> tuple[str, str] | None:
    for name in columns:
        value = raw.get(name)
        if isinstance(value, str) and _LONE_SURROGATES.search(value):
            return "invalid_encoding", f"column {name!r} holds bytes that are not UTF-8"
    return None


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
            return ("not_a_string", f"column {source.text_column!r} is {type(text).__name__}"), None
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
        coerced = _coerce(value, rule.type)
        if coerced is None:
            hint = " (ids are best declared `type: string`)" if rule.type == "int64" else ""
            return "invalid_value", f"column {name!r}: {_as_text(value)!r} is not {rule.type}{hint}"
        if rule.allowed is not None and str(coerced) not in rule.allowed:
            return "invalid_value", f"column {name!r}: {_as_text(value)!r} not in {list(rule.allowed)}"
    return None


def _coerce(value: Any, kind: str) -> Any:
    """`value` as `kind`, or None when it is empty or is not one (a whole number outside
    int64 is not an int64: it is refused, never rounded or overflowed)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "string":
        return value if isinstance(value, str) else _as_text(value)
    if isinstance(value, bool):
        return value if kind == "bool" else None
    if kind == "bool":
        if isinstance(value, str):
            return _BOOLEANS.get(value.strip().lower())
        return bool(value) if isinstance(value, (int, Decimal)) and value in (0, 1) else None
    number = _decimal(value)
    if number is None or not number.is_finite():
        return None
    if kind == "float64":
        return float(number)
    if number != number.to_integral_value() or not _INT64_RANGE[0] <= number <= _INT64_RANGE[1]:
        return None
    return int(number)


def _decimal(value: Any) -> Decimal | None:
    """A number exactly as written (a float by its shortest repr)."""
    try:
        if isinstance(value, float):
            return Decimal(repr(value))
        return Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        return None


def _as_text(value: Any) -> str:
    """A value as text, numbers as written: a Decimal keeps `1.43E+19`, a float its repr."""
    return repr(value) if isinstance(value, float) else str(value)


def _source_id(raw: dict[str, Any], row: SourceRow, source: SourceSpec, per_file: bool) -> str | None:
    value = raw.get(source.id_column) if source.id_column else None
    source_id = None if value is None or value == "" else _as_text(value)
    if not per_file:
        return source_id
    return f"{row.file}:{source_id if source_id is not None else f'row{row.number}'}"


def _prompt_row(prompt_id: str, text: str, source_id: str | None, row_number: int, raw: dict[str, Any],
                source: SourceSpec, names: dict[str, str], empty_labels: dict[str, None]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt_id": prompt_id, "text": text, "origin": ORIGIN_SOURCE, "source_id": source_id,
        "source_row": row_number, "parent_ids": [], "generator_model": None, "expansion_round": 0, "simhash": None,
        **empty_labels,
    }
    row.update({names[name]: _coerce(raw.get(name), rule.type) for name, rule in source.keep_columns.items()})
    return row


def _printable(text: str | None) -> str | None:
    """Text that can be written as UTF-8: bytes that were not are shown as escapes."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _reject(record_id: str, where: str, reason: str, detail: str, *, related: str | None = None,
            text: str | None = None, raw: bytes | None = None) -> dict[str, Any]:
    return {"record_id": record_id, "unit": "source_row", "stage": "load", "reason": reason,
            "detail": _printable(f"{where}: {detail}"), "related_id": related, "text": _printable(text), "raw": raw}
