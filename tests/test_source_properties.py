"""Property tests over generated files: whatever the bytes (random bytes in cells, BOMs, NULs,
broken quotes, mixed encodings, very long cells), loading never raises, every row read is
loaded or rejected with a reason, and what is loaded is the text that was written."""

from __future__ import annotations

import codecs
import io
import re
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.config import PROJECT_ROOT, load_spec
from tasks.stage1.sources import load_source

SPEC = load_spec("savacu")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
PIECES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.text(st.characters(codec="cp1252"), max_size=40).map(lambda text: text.encode("cp1252")),
    st.sampled_from([b"\x00", b'"', b",", b"\r", b"\n", b"\r\n", codecs.BOM_UTF8, b"\x81", b"\xe2\x80", b"\\ud800"]),
    st.just(b"long " * 5_000),  # 25,000 characters: over max_chars
)
CELLS = st.lists(PIECES, max_size=4).map(b"".join)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n"])


def loaded_from(name: str, content: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        loaded = load_source(SPEC, PROJECT_ROOT, real=False, location=str(path))
    for table in (loaded.prompts, loaded.rejects):
        pq.write_table(table, io.BytesIO())  # what was loaded can be written, whatever the bytes were
    assert loaded.rows_read == loaded.prompts.num_rows + loaded.rejects.num_rows
    assert all(loaded.rejects["reason"].to_pylist()) and all(loaded.rejects["detail"].to_pylist())
    return loaded


def expected_outcome(cell: bytes) -> str:
    """What loading does with a quoted cell: the reason it leaves for, or `loaded:<text>`.
    The cell's row is UTF-8 if its bytes are, else cp1252 (the CSV default fallback)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            text = cell.decode(encoding).replace("\r\n", "\n").strip()
        except UnicodeDecodeError:
            continue
        if not text:
            return "empty_text"
        if CONTROL.search(text):
            return "control_characters"
        return "too_long" if len(text) > SPEC.source.max_chars else f"loaded:{text}"
    return "invalid_encoding"


@settings(max_examples=80, deadline=None)
@given(st.lists(CELLS, max_size=12), st.booleans(), LINE_ENDS)
def test_well_quoted_csv_rows_are_each_loaded_as_written_or_rejected(cells, bom, line_end) -> None:
    lines = [b"row_index,prompt"] + [f"{i},".encode() + b'"' + cell.replace(b'"', b'""') + b'"'
                                     for i, cell in enumerate(cells)]
    loaded = loaded_from("prompts.csv", (codecs.BOM_UTF8 if bom else b"") + line_end.join(lines) + line_end)

    outcomes = {number: f"loaded:{text}" for number, text in
                zip(loaded.prompts["source_row"].to_pylist(), loaded.prompts["text"].to_pylist(), strict=True)}
    for record, reason, raw in zip(*(loaded.rejects[c].to_pylist() for c in ("record_id", "reason", "raw")), strict=True):
        outcomes[int(record.rsplit("row", 1)[1])] = reason
        assert reason != "invalid_encoding" or raw  # bytes no encoding reads are kept
    assert loaded.rows_read == len(cells)
    assert outcomes == {number: expected_outcome(cell) for number, cell in enumerate(cells)}


# A quote left open runs on to the next quote that could close a cell (one followed by a
# delimiter or a line end); in rows written by a CSV writer, that is only a quote inside a
# cell, or a cell that starts with a line end or a delimiter.
PLAIN_CELLS = CELLS.map(lambda cell: cell.replace(b'"', b"'")).filter(lambda cell: not cell.startswith((b"\r", b"\n", b",")))


@settings(max_examples=60, deadline=None)
@given(st.lists(PLAIN_CELLS, min_size=1, max_size=10), st.data())
def test_a_quote_left_open_costs_its_own_line_only(cells, data) -> None:
    broken_at = data.draw(st.integers(0, len(cells)))
    lines = [f"{i},".encode() + b'"' + cell.replace(b'"', b'""') + b'"' for i, cell in enumerate(cells)]
    lines.insert(broken_at, b'99,"a quote that never closes')
    loaded = loaded_from("prompts.csv", b"\n".join([b"row_index,prompt", *lines]) + b"\n")

    broken = [reason for reason, raw in zip(loaded.rejects["reason"].to_pylist(), loaded.rejects["raw"].to_pylist())
              if raw == b'99,"a quote that never closes\n']
    assert broken == ["broken_quotes"]
    assert loaded.rows_read == len(cells) + 1
    loaded_ids = set(loaded.prompts["source_id"].to_pylist())
    assert loaded_ids == {str(i) for i, cell in enumerate(cells) if expected_outcome(cell).startswith("loaded:")}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=5).map(b"".join), max_size=12), LINE_ENDS)
def test_any_bytes_under_a_header_never_raise_and_every_row_is_accounted_for(lines, line_end) -> None:
    content = line_end.join([b"row_index,prompt", *lines])
    loaded = loaded_from("prompts.csv", content)
    assert loaded.rows_read <= content.count(b"\n") + content.count(b"\r") + 1


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(
    st.lists(PIECES, max_size=4).map(b"".join),
    st.text(max_size=40).map(lambda text: b'{"row_index": 7, "prompt": "' + text.encode("utf-8", "surrogatepass") + b'"}'),
    CELLS.map(lambda cell: b'{"row_index": 8, "prompt": "' + cell.replace(b"\n", b" ").replace(b"\r", b" ") + b'"}'),
), max_size=12))
def test_json_lines_of_any_bytes_never_raise_after_a_json_first_line(lines) -> None:
    loaded_from("prompts.jsonl", b"\n".join([b'{"row_index": 0, "prompt": "first"}', *lines]))
