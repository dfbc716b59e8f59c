"""Sources read from files as users have them: formats, folders and globs, encodings, ids as
text, broken rows; every row loaded or rejected with a reason that names file, line and column."""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.spec import DatasetSpec, SourceSpec
from tasks.config import PROJECT_ROOT, ConfigError, load_spec, with_source_encoding
from tasks.stage1.source_files import SourceFormatError, SourceUnavailable, column_names
from tasks.stage1 import sources
from tasks.stage1.sources import load_source
from tests.messy_files import DICES_COLUMNS, QUESTIONS, dices_csv, spreadsheet_culturax_csv


def spec_with(name: str, **source_updates) -> DatasetSpec:
    spec = load_spec(name)
    source = SourceSpec.model_validate({**spec.source.model_dump(), **source_updates})
    return spec.model_copy(update={"source": source})


def load(spec: DatasetSpec, location: Path | str, **options):
    return load_source(spec, PROJECT_ROOT, real=False, location=str(location), **options)


def reasons(loaded) -> list[str]:
    return sorted(loaded.rejects["reason"].to_pylist())


def test_spreadsheet_csv_loads_cp1252_rows_ids_as_text_and_rejects_only_the_undecodable_row(tmp_path: Path) -> None:
    spec = spec_with("culturax", keep_columns={"class": {"type": "int64"}, "domain": {}})
    loaded = load(spec, spreadsheet_culturax_csv(tmp_path / "questions.csv"))

    assert loaded.rows_read == 7 == loaded.prompts.num_rows + loaded.rejects.num_rows
    texts = loaded.prompts["text"].to_pylist()
    assert texts[0] == QUESTIONS[0] and "\u2019" in texts[0]  # 0x92 read as a curly apostrophe
    assert texts[3] == QUESTIONS[3].replace(", and", ",\nand")  # the quoted newline is part of the cell
    assert loaded.prompts["source_id"].to_pylist()[:2] == ["1.40E+19", "1.41E+19"]  # as written, not rounded

    reject = loaded.rejects.to_pylist()[0]
    assert reject["reason"] == "invalid_encoding"
    assert reject["raw"] == b'9.99E+19,"broken \x81\x8d bytes",7,Dance,,,\r\n'  # the bytes, kept
    assert reject["detail"].startswith("questions.csv line 9: ")

    fingerprint = loaded.fingerprint
    assert (fingerprint.kind, fingerprint.fallback_encoding, fingerprint.rows_decoded_with_fallback) == ("path", "cp1252", 4)
    assert fingerprint.files[0].encoding == "utf-8+cp1252"
    assert fingerprint.files[0].header_renames == {"column 5: ''": "unnamed_5", "column 6: ''": "unnamed_6",
                                                   "column 7: ''": "unnamed_7"}
    # The release writes `class` and `domain` itself: the source's own are kept under new names.
    assert fingerprint.column_renames == {"class": "source_class", "domain": "source_domain"}
    assert loaded.prompts["source_class"].to_pylist()[:3] == [0, 1, 2]
    assert loaded.prompts["source_domain"].to_pylist()[0] == "Live Music"


def test_a_utf8_file_is_utf8_and_its_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_bytes(codecs.BOM_UTF8 + "row_index,prompt\n1,Caf\u00e9 culture in Vienna?\n".encode())
    loaded = load(load_spec("savacu"), path)
    assert loaded.prompts["text"].to_pylist() == ["Caf\u00e9 culture in Vienna?"]
    assert loaded.fingerprint.files[0].encoding == "utf-8-sig" and loaded.fingerprint.rows_decoded_with_fallback == 0


def test_a_utf16_file_is_read_by_its_bom(tmp_path: Path) -> None:
    path = tmp_path / "prompts.tsv"
    path.write_bytes("row_index\tprompt\r\n1\tWhat is a \u0161ljivovica toast?\r\n".encode("utf-16"))
    loaded = load(load_spec("savacu"), path)
    assert loaded.prompts["text"].to_pylist() == ["What is a \u0161ljivovica toast?"]
    assert loaded.fingerprint.files[0].encoding == "utf-16"


def test_mixed_encodings_are_decided_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_bytes(b"row_index,prompt\n1,Caf\xc3\xa9 in UTF-8\n2,Caf\xe9 in cp1252\n3,\xc3\xa9 only\n")
    loaded = load(load_spec("savacu"), path)
    assert loaded.prompts["text"].to_pylist() == ["Caf\u00e9 in UTF-8", "Caf\u00e9 in cp1252", "\u00e9 only"]
    assert loaded.fingerprint.rows_decoded_with_fallback == 1


def test_a_declared_fallback_replaces_the_default(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_bytes("row_index,prompt\n1,Как отмечают Масленицу?\n".encode("koi8-r"))
    loaded = load(with_source_encoding(load_spec("savacu"), "koi8-r"), path)
    assert loaded.prompts["text"].to_pylist() == ["Как отмечают Масленицу?"]
    assert loaded.fingerprint.fallback_encoding == "koi8-r"


def test_json_lines_have_no_default_fallback_and_keep_the_raw_line(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"row_index": 1, "prompt": "fine prompt"}\n{"row_index": 2, "prompt": "caf\xe9"}\n'
                     b'{"row_index": 3, "prompt": "lone \\ud800 escape"}\n')
    loaded = load(load_spec("savacu"), path)
    assert loaded.prompts.num_rows == 1 and reasons(loaded) == ["invalid_encoding", "invalid_encoding"]
    assert loaded.rejects["raw"].to_pylist()[0] == b'{"row_index": 2, "prompt": "caf\xe9"}\n'
    declared = load(with_source_encoding(load_spec("savacu"), "latin-1"), path)
    assert declared.prompts["text"].to_pylist() == ["fine prompt", "caf\u00e9"]


def test_broken_quotes_swallow_no_rows_and_extra_cells_are_malformed(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_bytes(b'row_index,prompt\n1,"never closed\n2,second prompt\n3,third prompt,,\n'
                     b'4,fourth,surplus\n5,"multi\nline"\n6,"a ""quoted"" word"\n7,"left "open\n8,"at the end')
    loaded = load(load_spec("savacu"), path)
    assert loaded.prompts["text"].to_pylist() == ["second prompt", "third prompt", "multi\nline",
                                                  'a "quoted" word']
    assert reasons(loaded) == ["broken_quotes", "broken_quotes", "broken_quotes", "malformed_row"]
    assert loaded.rejects["detail"].to_pylist()[0].startswith("prompts.csv line 2: ")
    assert loaded.rejects["raw"].to_pylist()[0] == b'1,"never closed\n'


def test_header_names_blank_or_repeated_get_their_own() -> None:
    assert column_names([" id", "text", "", "text", "text.1", ""]) == (
        ["id", "text", "unnamed_3", "text.2", "text.1", "unnamed_6"],
        {"column 1: ' id'": "id", "column 3: ''": "unnamed_3", "column 4: 'text'": "text.2",
         "column 6: ''": "unnamed_6"})


def test_an_int64_column_out_of_range_is_an_invalid_value_naming_file_line_and_column(tmp_path: Path) -> None:
    spec = spec_with("savacu", keep_columns={"votes": {"type": "int64"}})
    path = tmp_path / "prompts.csv"
    path.write_text("row_index,prompt,votes\n1,first prompt,1.43E+19\n2,second prompt,1E+3\n3,third,2.5\n")
    loaded = load(spec, path)
    assert loaded.prompts["votes"].to_pylist() == [1000]
    assert loaded.rejects["detail"].to_pylist() == [
        "prompts.csv line 2: column 'votes': '1.43E+19' is not int64 (ids are best declared `type: string`)",
        "prompts.csv line 4: column 'votes': '2.5' is not int64 (ids are best declared `type: string`)"]


def test_json_documents_and_parquet_files(tmp_path: Path) -> None:
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([{"row_index": 1, "prompt": "first"}, {"row_index": 2, "prompt": "second"}]))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 2, "data": [{"row_index": 1.5e19, "prompt": "third"}]}))
    assert load(load_spec("savacu"), listed).prompts["text"].to_pylist() == ["first", "second"]
    assert load(load_spec("savacu"), wrapped).prompts["source_id"].to_pylist() == ["1.5E+19"]

    parquet = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"row_index": [1, 2], "prompt": [b"caf\xe9 question", b"plain question"]}), parquet)
    loaded = load(with_source_encoding(load_spec("savacu"), "cp1252"), parquet)
    assert loaded.prompts["text"].to_pylist() == ["caf\u00e9 question", "plain question"]
    assert loaded.fingerprint.rows_decoded_with_fallback == 1


def test_a_folder_or_glob_reads_every_data_file_with_ids_per_file(tmp_path: Path) -> None:
    folder = tmp_path / "llm_prompt_dataset"
    (folder / "sets").mkdir(parents=True)
    (folder / "README.md").write_text("compiled prompt sets")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk.csv").write_text("not,data\n")
    (folder / "sets" / "a.csv").write_text("row_index,prompt\n1,first set prompt\n2,another one\n")
    (folder / "sets" / "b.jsonl").write_text('{"row_index": 1, "prompt": "second set prompt"}\n')
    loaded = load(load_spec("savacu"), folder)
    assert loaded.prompts["source_id"].to_pylist() == ["sets/a.csv:1", "sets/a.csv:2", "sets/b.jsonl:1"]
    assert [f.path for f in loaded.fingerprint.files] == ["sets/a.csv", "sets/b.jsonl"]
    assert loaded.fingerprint.skipped_files == ["README.md"]

    globbed = load(load_spec("savacu"), folder / "sets" / "*.csv")
    assert globbed.prompts.num_rows == 2 and globbed.fingerprint.files[0].path == "a.csv"


def test_a_folder_file_without_the_text_column_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "good.jsonl").write_text('{"row_index": 1, "prompt": "fine"}\n')
    (tmp_path / "odd.jsonl").write_text('{"row_index": 1, "instruction": "other layout"}\n')
    with pytest.raises(SourceFormatError, match=r"odd.jsonl: expected a column 'prompt'; found \['instruction'"):
        load(load_spec("savacu"), tmp_path)


def test_dices_real_columns_are_accepted_with_demographics_and_rater_ids_as_written(tmp_path: Path) -> None:
    loaded = load(load_spec("demo_safetybench"), dices_csv(tmp_path / "diverse_safety_adversarial_dialog_350.csv"))
    assert loaded.rejects.num_rows == 0 and loaded.prompts.num_rows == 3
    annotations = loaded.annotations.to_pylist()
    assert len(annotations) == 12
    assert [a["rater_id"] for a in annotations[:4]] == ["1.40E+19", "1.41E+19", "1.42E+19", "1.43E+19"]
    assert {a["rater_gender"] for a in annotations} == {"Man", "Woman"} and annotations[0]["rater_locale"] is None
    assert "\nBOT: Something easy to share.\nBOT: Maybe a pasta salad \u2013" in loaded.prompts["text"][0].as_py()
    assert len(DICES_COLUMNS) == 41


def test_a_missing_real_source_fails_in_one_line_saying_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as raised:
        load_source(load_spec("savacu"), PROJECT_ROOT, real=True, home=tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"savacu: source not found: {tmp_path / 'sources' / 'llm_prompt_dataset'} does not exist")
    assert "--source PATH" in message and "source.real.path" in message and "anonymous.4open.science" in message


def test_a_relative_real_path_is_under_the_data_home(tmp_path: Path) -> None:
    folder = tmp_path / "sources" / "llm_prompt_dataset"
    folder.mkdir(parents=True)
    (folder / "prompts.jsonl").write_text('{"row_index": 1, "prompt": "a real prompt"}\n')
    loaded = load_source(load_spec("misaligntrade"), PROJECT_ROOT, real=True, home=tmp_path)
    assert loaded.prompts["text"].to_pylist() == ["a real prompt"] and loaded.fingerprint.location == str(folder)


def test_a_url_source_is_downloaded_once_into_the_data_home(tmp_path: Path) -> None:
    published = dices_csv(tmp_path / "published.csv", conversations=1, raters=2)
    spec = load_spec("demo_safetybench")
    real = spec.source.real.model_copy(update={"url": published.as_uri()})
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"real": real})})
    loaded = load_source(spec, PROJECT_ROOT, real=True, home=tmp_path / "home")
    copy = tmp_path / "home" / "sources" / "dices_350" / "published.csv"
    assert copy.read_bytes() == published.read_bytes() and loaded.annotations.num_rows == 2
    assert loaded.fingerprint.kind == "url"
    published.unlink()  # later builds read the copy
    assert load_source(spec, PROJECT_ROOT, real=True, home=tmp_path / "home").annotations.num_rows == 2


def test_a_hub_id_goes_through_datasets_and_its_failure_is_one_clear_line(monkeypatch) -> None:
    calls = []

    def head_commit(hub_id):  # the head is resolved to a commit first, so the rows read are that commit's
        if hub_id == "someone/gone":
            raise ConnectionError("Couldn't reach 'someone/gone' on the Hub\n(details)")
        return "c0ffee"

    def fake_load_dataset(hub_id, config, split, revision):
        calls.append((hub_id, config, split, revision))
        return datasets.Dataset.from_list([{"row_index": 1, "prompt": "hub prompt"}])

    monkeypatch.setattr(sources, "hub_dataset_commit", head_commit)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load(load_spec("savacu"), "someone/prompts")
    assert calls == [("someone/prompts", None, "train", "c0ffee")] and loaded.fingerprint.kind == "hub"
    assert loaded.fingerprint.revision == "c0ffee"
    assert loaded.prompts["text"].to_pylist() == ["hub prompt"]
    with pytest.raises(SourceUnavailable, match=r"^savacu: cannot load someone/gone from the Hub: ConnectionError: "
                                                r"Couldn't reach 'someone/gone' on the Hub; or download") as raised:
        load(load_spec("savacu"), "someone/gone")
    assert "\n" not in str(raised.value)


def test_a_missing_given_source_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match=r"^culturax: --source .*nowhere.csv does not exist$"):
        load(load_spec("culturax"), tmp_path / "nowhere.csv")


def test_encodings_must_keep_ascii_bytes_and_exist() -> None:
    with pytest.raises(ConfigError, match="does not keep ASCII bytes as ASCII"):
        with_source_encoding(load_spec("savacu"), "utf-16")
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        with_source_encoding(load_spec("savacu"), "klingon")
    assert with_source_encoding(load_spec("savacu"), "Latin-1").source.encoding == "iso8859-1"


def test_kept_columns_whose_renamed_form_is_taken_too_are_refused_at_load(tmp_path: Path) -> None:
    spec = spec_with("culturax", keep_columns={"class": {}, "source_class": {}})
    path = tmp_path / "questions.csv"
    path.write_text("id,Question,class,source_class\n1,What is a ceilidh?,3,4\n")
    with pytest.raises(ConfigError, match=r"source column 'class' is a column the release writes, and "
                                          r"'source_class', its renamed form, is taken too"):
        load(spec, path)


def test_loaded_tables_are_writable_whatever_the_bytes(tmp_path: Path) -> None:
    loaded = load(spec_with("culturax", keep_columns={"domain": {}}), spreadsheet_culturax_csv(tmp_path / "q.csv"))
    for table in (loaded.prompts, loaded.rejects):
        pq.write_table(table, io.BytesIO())
