"""Reading a source's files into rows, nothing lost: locations, formats, encodings, row boundaries.

A location is one file, a folder (every data file under it) or a glob, of CSV, TSV, JSON
lines, JSON or Parquet files (by suffix; a single file whose suffix names no format is
read in the spec's format).

Encodings: a UTF-8 BOM is dropped and a UTF-16 BOM decodes the whole file; a file that is
valid UTF-8 is UTF-8. Otherwise each row is looked at on its own (files are often
concatenated from several tools): a row whose bytes are valid UTF-8 stays UTF-8, another
is decoded whole with the fallback encoding, and a row that neither makes sense of comes
back with its raw bytes and the problem ``invalid_encoding``. Rows are delimited before
they are decoded, so the fallback must keep ASCII bytes as ASCII (the spec checks it).

CSV and TSV cells are read as text: ids stay as written (``1.43E+19`` is not rounded to a
float), quoted newlines belong to their cell, blank and repeated header names get names
of their own, and empty cells past the header are dropped. A quote left open would
swallow every row after it: quotes are read strictly (a closing quote must end its cell),
so a quote that never closes properly stops the record; only the line it started on
leaves (``broken_quotes``), and reading restarts on the next line. (A quote left open still
runs on to the next quote that could close a cell, one followed by a delimiter or a line
end: what it took in is then one record, accounted for like any other.)

One bad row never raises; a wholly unreadable file (no header, not JSON, not Parquet)
raises SourceFormatError naming the file.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import SourceFile

FORMAT_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
                    ".parquet": "parquet"}
# Spreadsheet exports on Windows write cp1252; JSON's standard says UTF-8, so JSON has no default fallback.
DEFAULT_FALLBACK = {"csv": "cp1252", "tsv": "cp1252"}
_DELIMITER = {"csv": ",", "tsv": "\t"}
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # cannot be written as UTF-8 (JSON "\ud800" escapes)
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


class SourceFormatError(ValueError):
    """The source cannot be read as the spec says (format or columns)."""


class SourceUnavailable(SourceFormatError):
    """The source is not where the spec or `--source` says, or cannot be fetched."""


class SourceRow(NamedTuple):  # a tuple: a source has millions of them
    """One record of a source file: its values, or the problem that kept them from being read."""

    file: str  # the file's name relative to the source location
    number: int  # 0-based record number within the file (header and blank lines not counted)
    values: Any  # column -> value for a record; anything else is not a row
    line: int | None = None  # 1-based line the record starts on (text formats)
    problem: tuple[str, str] | None = None  # (reason, detail) found while reading
    raw: bytes | None = None  # the record's bytes, kept when it leaves for what its bytes are
    decoded_with_fallback: bool = False

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}" if self.line is not None else f"{self.file} row {self.number}"


@dataclass(frozen=True)
class ReadFiles:
    rows: list[SourceRow]
    files: list[SourceFile]
    skipped: list[str]  # files of a folder or glob that are not data

    @property
    def sha256(self) -> str:
        """The file's digest; for several files, a digest of their names and digests."""
        if len(self.files) == 1:
            return self.files[0].sha256
        listing = "".join(f"{f.path}\0{f.sha256}\n" for f in self.files)
        return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def read_location(location: Path | str, default_format: str, encoding: str | None) -> ReadFiles:
    """Every row of the data files at `location`. `encoding` is the declared fallback (None:
    the format's default)."""
    root, paths, skipped = find_files(location, default_format)
    rows: list[SourceRow] = []
    files: list[SourceFile] = []
    for path in paths:
        label = path.name if path == root else path.relative_to(root).as_posix()
        file_format = FORMAT_BY_SUFFIX.get(path.suffix.lower(), default_format)
        file_rows, report = read_file(path, label, file_format, encoding or DEFAULT_FALLBACK.get(file_format))
        rows.extend(file_rows)
        files.append(report)
    return ReadFiles(rows, files, skipped)


def find_files(location: Path | str, default_format: str) -> tuple[Path, list[Path], list[str]]:
    """(folder names are relative to, data files in order, names of other files skipped)."""
    text = str(location)
    path = Path(text).expanduser()
    if path.is_file():
        return path, [path], []
    if path.is_dir():
        root, candidates = path, [p for p in path.rglob("*") if p.is_file()]
    elif _GLOB_CHARACTERS.search(text):
        root = Path(*[part for part in path.parts if not _GLOB_CHARACTERS.search(part)][:_glob_depth(path)])
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    else:
        raise SourceUnavailable(f"{path} does not exist")
    visible = sorted(p for p in candidates if not any(part.startswith(".") for part in p.relative_to(root).parts))
    data = [p for p in visible if p.suffix.lower() in FORMAT_BY_SUFFIX]
    skipped = [p.relative_to(root).as_posix() for p in visible if p.suffix.lower() not in FORMAT_BY_SUFFIX]
    if not data:
        found = ", ".join(skipped[:5]) or "nothing"
        raise SourceUnavailable(f"{text}: no CSV, TSV, JSONL, JSON or Parquet file there (found {found})")
    return root, data, skipped


def _glob_depth(path: Path) -> int:
    """How many leading parts of a glob path hold no glob character."""
    return next((i for i, part in enumerate(path.parts) if _GLOB_CHARACTERS.search(part)), len(path.parts))


def read_file(path: Path, label: str, file_format: str, fallback: str | None) -> tuple[list[SourceRow], SourceFile]:
    data = path.read_bytes()
    header_renames: dict[str, str] = {}
    if file_format == "parquet":
        rows, encoding = _parquet_rows(data, label, fallback), "arrow"
    else:
        text, encoding, clean = _decode_file(data, label)
        if file_format in _DELIMITER:
            rows, header_renames = _delimited_rows(text, label, clean, fallback, _DELIMITER[file_format])
        elif file_format == "jsonl":
            rows = _json_lines_rows(text, label, clean, fallback)
        else:
            rows = _json_document_rows(text, label, clean, fallback)
    with_fallback = sum(row.decoded_with_fallback for row in rows)
    report = SourceFile(path=label, format=file_format, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        rows=len(rows), encoding=f"{encoding}+{fallback}" if with_fallback else encoding,
                        rows_decoded_with_fallback=with_fallback, header_renames=header_renames)
    return rows, report


def _decode_file(data: bytes, label: str) -> tuple[str, str, bool]:
    """(text, encoding, clean): text keeps bytes that are not UTF-8 as surrogate escapes
    when `clean` is False, for each row to decide on."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16", True
        except UnicodeDecodeError as error:
            raise SourceFormatError(f"{label}: starts with a UTF-16 byte order mark but is not UTF-16 ({error})") from error
    encoding = "utf-8"
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8):], "utf-8-sig"
    try:
        return data.decode("utf-8"), encoding, True
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), encoding, False


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _redecoded(texts: list[str], fallback: str | None) -> list[str] | None:
    """The texts' bytes decoded with the fallback; None when there is none or it fails."""
    if fallback is None:
        return None
    try:
        return [_raw(text).decode(fallback) for text in texts]
    except UnicodeDecodeError:
        return None


def _invalid_encoding(fallback: str | None) -> tuple[str, str]:
    tried = f"UTF-8 nor {fallback}" if fallback else "UTF-8 (declare a fallback with `encoding`)"
    return "invalid_encoding", f"bytes that are neither {tried}"


# ---- CSV and TSV ------------------------------------------------------------------------------


class _LineFeed:
    """Lines for csv.reader that can be rewound: the reader keeps no state between records,
    so reading can restart on any line."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.position = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self.position >= len(self.lines):
            raise StopIteration
        self.position += 1
        return self.lines[self.position - 1]


def _delimited_rows(text: str, label: str, clean: bool, fallback: str | None,
                    delimiter: str) -> tuple[list[SourceRow], dict[str, str]]:
    lines = io.StringIO(text, newline="").readlines()
    feed = _LineFeed(lines)
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    # A long cell is the too_long check's to reject with its reason, not the parser's.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    header: list[str] | None = None
    renames: dict[str, str] = {}
    rows: list[SourceRow] = []

    def add(values: Any, start: int, problem: tuple[str, str] | None = None, raw: bytes | None = None,
            fallback_used: bool = False) -> None:
        rows.append(SourceRow(label, len(rows), values, line=start + 1, problem=problem, raw=raw,
                              decoded_with_fallback=fallback_used))

    while True:
        start = feed.position
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:  # strict quoting is the only rule the reader can find broken
            if header is None:
                raise SourceFormatError(f"{label} line {start + 1}: header cannot be read ({error})") from error
            feed.position = start + 1
            add(None, start, ("broken_quotes", f"a quote on this line is not closed where a cell ends ({error})"),
                _raw(lines[start]))
            continue
        if not cells:
            continue  # a blank line is no record
        record = lines[start:feed.position]
        problem, fallback_used = None, False
        if not clean and any(map(_ESCAPED_BYTES.search, record)):
            decoded = _redecoded(cells, fallback)
            if decoded is None:
                problem = _invalid_encoding(fallback)
            else:
                cells, fallback_used = decoded, True
        if header is None:
            if problem:
                raise SourceFormatError(f"{label} line {start + 1}: header is {problem[1]}")
            header, renames = column_names(cells)
            continue
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header):]):
            problem = problem or ("malformed_row", f"{len(cells)} cells, the header has {len(header)}")
        if problem:
            add(None, start, problem, _raw("".join(record)))
        else:
            cells += [None] * (len(header) - len(cells))  # a short row: its missing cells are empty
            add(dict(zip(header, cells)), start, fallback_used=fallback_used)
    if header is None:
        raise SourceFormatError(f"{label}: empty file, no header")
    return rows, renames


def column_names(header: list[str]) -> tuple[list[str], dict[str, str]]:
    """Usable column names for a header as written, and what was renamed: surrounding
    spaces dropped, a blank name becomes `unnamed_<position>`, a repeated one `<name>.<k>`
    (the first keeps the name)."""
    names: list[str] = []
    renames: dict[str, str] = {}
    taken = {cell.strip() for cell in header if cell.strip()}
    for position, cell in enumerate(header, start=1):
        name = cell.strip() or f"unnamed_{position}"
        if name in names:
            copy = 1
            while f"{name}.{copy}" in taken or f"{name}.{copy}" in names:
                copy += 1
            name = f"{name}.{copy}"
        if name != cell:
            renames[f"column {position}: {cell!r}"] = name
        names.append(name)
    return names, renames


# ---- JSON lines, JSON, Parquet ------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {change(key): _map_strings(item, change) for key, item in value.items()}
    return value


def _unwritable(value: Any) -> tuple[str, str] | None:
    if any(_LONE_SURROGATES.search(s) for s in _strings(value)):
        return "invalid_encoding", "holds an unpaired surrogate (a \\ud800-style escape), which is no character"
    return None


def _json_lines_rows(text: str, label: str, clean: bool, fallback: str | None) -> list[SourceRow]:
    rows: list[SourceRow] = []
    first = True
    for index, line in enumerate(io.StringIO(text, newline="").readlines()):
        if not line.strip():
            continue
        problem, fallback_used, values = None, False, None
        if not clean and _ESCAPED_BYTES.search(line):
            decoded = _redecoded([line], fallback)
            if decoded is None:
                problem = _invalid_encoding(fallback)
            else:
                line, fallback_used = decoded[0], True
        if problem is None:
            try:
                values = json.loads(line, parse_float=Decimal)  # decimals as written: ids are not rounded
            except json.JSONDecodeError as error:
                if first:
                    raise SourceFormatError(f"{label} line {index + 1} is not JSON ({error}); expected JSON lines") from error
                problem = ("invalid_json", f"not JSON ({error})")
            else:
                problem = _unwritable(values)
        first = False
        rows.append(SourceRow(label, len(rows), None if problem else values, line=index + 1, problem=problem,
                              raw=_raw(line) if problem else None, decoded_with_fallback=fallback_used))
    return rows


def _json_document_rows(text: str, label: str, clean: bool, fallback: str | None) -> list[SourceRow]:
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise SourceFormatError(f"{label}: not JSON ({error}); a .json source holds a list of records") from error
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise SourceFormatError(f"{label}: expected a list of records or an object holding one list; "
                                    f"found an object with keys {sorted(document)[:10]}")
        document = lists[0]
    if not isinstance(document, list):
        raise SourceFormatError(f"{label}: expected a list of records; found {type(document).__name__}")
    rows: list[SourceRow] = []
    for number, record in enumerate(document):
        problem, fallback_used = None, False
        if not clean and any(_ESCAPED_BYTES.search(s) for s in _strings(record)):
            strings = list(_strings(record))
            decoded = _redecoded(strings, fallback)
            if decoded is None:
                problem = _invalid_encoding(fallback)
            else:
                by_original = dict(zip(strings, decoded))
                record, fallback_used = _map_strings(record, by_original.__getitem__), True
        problem = problem or _unwritable(record)
        rows.append(SourceRow(label, number, None if problem else record, problem=problem,
                              raw=_record_bytes(record) if problem else None, decoded_with_fallback=fallback_used))
    return rows


def _record_bytes(record: Any) -> bytes:
    """A JSON record as its bytes were (escaped bytes restored), or ASCII-escaped when it
    holds surrogates that never were bytes."""
    try:
        return _raw(json.dumps(record, ensure_ascii=False, default=str))
    except UnicodeEncodeError:
        return json.dumps(record, default=str).encode("ascii")


def _parquet_rows(data: bytes, label: str, fallback: str | None) -> list[SourceRow]:
    try:
        records = pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise SourceFormatError(f"{label}: not a Parquet file ({error})") from error
    rows: list[SourceRow] = []
    for number, record in enumerate(records):
        binary = {name: value for name, value in record.items() if isinstance(value, bytes)}
        problem, fallback_used = None, False
        try:
            record = {**record, **{name: value.decode("utf-8") for name, value in binary.items()}}
        except UnicodeDecodeError:
            decoded = _redecoded([value.decode("utf-8", "surrogateescape") for value in binary.values()], fallback)
            if decoded is None:
                problem = _invalid_encoding(fallback)
            else:
                record, fallback_used = {**record, **dict(zip(binary, decoded))}, True
        rows.append(SourceRow(label, number, None if problem else record, problem=problem,
                              raw=b"\n".join(binary.values()) if problem else None, decoded_with_fallback=fallback_used))
    return rows
