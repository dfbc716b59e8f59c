"""Source loading: every row is loaded or rejected with a reason; wrong files fail early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.manifest import SourceFingerprint
from tasks.config import PROJECT_ROOT, load_spec, spec_names
from tasks.stage1.source_files import SourceRow
from tasks.stage1.sources import SourceFormatError, build_prompts, load_source

FINGERPRINT = SourceFingerprint(kind="sample", location="test", sha256="0", rows=0)


@pytest.mark.parametrize("name", spec_names())
def test_bundled_samples_load_and_every_row_is_accounted_for(name: str) -> None:
    loaded = load_source(load_spec(name), PROJECT_ROOT, real=False)
    grouped_rows = loaded.annotations.num_rows if loaded.annotations is not None else loaded.prompts.num_rows
    assert loaded.rows_read == grouped_rows + loaded.rejects.num_rows
    assert loaded.rejects.num_rows > 0, "each sample carries deliberately bad rows"
    assert set(loaded.rejects["unit"].to_pylist()) == {"source_row"}
    assert all(loaded.rejects["reason"].to_pylist())
    assert len(set(loaded.prompts["prompt_id"].to_pylist())) == loaded.prompts.num_rows


def test_culturax_sample_bad_rows_have_their_reasons() -> None:
    loaded = load_source(load_spec("culturax"), PROJECT_ROOT, real=False)
    assert {"empty_text", "not_a_string", "missing_column", "duplicate_source_id", "control_characters"} <= set(
        loaded.rejects["reason"].to_pylist())


def test_dices_grouping_keeps_demographics_and_majority_text() -> None:
    loaded = load_source(load_spec("demo_safetybench"), PROJECT_ROOT, real=False)
    reasons = loaded.rejects["reason"].to_pylist()
    assert reasons.count("conflicting_text") == 1  # the one corrupt row, not its whole group
    assert "invalid_value" in reasons
    annotations = loaded.annotations.to_pylist()
    assert {a["rater_gender"] for a in annotations} <= {"Man", "Woman"}
    assert set(a["prompt_id"] for a in annotations) == set(loaded.prompts["prompt_id"].to_pylist())


def rows(*records):
    return [SourceRow("test.jsonl", number, record) for number, record in enumerate(records)]


def test_limit_rejects_the_rest_with_a_reason() -> None:
    spec = load_spec("savacu")
    loaded = build_prompts(spec, rows(*[{"row_index": i, "prompt": f"prompt number {i}"} for i in range(10)]),
                           FINGERPRINT, limit=4)
    assert loaded.prompts.num_rows == 4
    assert loaded.rejects["reason"].to_pylist() == ["over_limit"] * 6


def test_wrong_columns_fail_early_naming_file_and_columns() -> None:
    spec = load_spec("savacu")
    with pytest.raises(SourceFormatError, match=r"expected a column 'prompt'; found \['question', 'row_index'\]"):
        build_prompts(spec, rows({"row_index": 1, "question": "hello there"}), FINGERPRINT)


def test_wrong_format_fails_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "prompts.jsonl"
    bad.write_text("row_index,prompt\n1,hello\n")
    spec = load_spec("savacu")
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"sample": str(bad)})})
    with pytest.raises(SourceFormatError, match="prompts.jsonl"):
        load_source(spec, Path("/"), real=False)


def test_invalid_encoding_and_huge_prompts_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"row_index": 1, "prompt": "fine prompt here"}\n'
                     + b'{"row_index": 2, "prompt": "broken \xff\xfe bytes"}\n'
                     + json.dumps({"row_index": 3, "prompt": "x" * 1_000_000}).encode() + b"\n")
    spec = load_spec("savacu")
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"sample": str(path)})})
    loaded = load_source(spec, Path("/"), real=False)
    assert loaded.prompts.num_rows == 1
    assert sorted(loaded.rejects["reason"].to_pylist()) == ["invalid_encoding", "too_long"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.just("  \t ")), max_size=25))
def test_any_rows_are_loaded_or_rejected_never_lost(values) -> None:
    spec = load_spec("savacu")
    records = [{"row_index": i, "prompt": value} for i, value in enumerate(values)]
    loaded = build_prompts(spec, rows(*records), FINGERPRINT)
    assert loaded.prompts.num_rows + loaded.rejects.num_rows == len(values)
    assert all(text.strip() for text in loaded.prompts["text"].to_pylist())


class HubRows:
    """What `datasets.load_dataset` returns for a hub split, reduced to what the loader reads."""

    _fingerprint = "f00d" * 4
    num_rows = 1

    def __iter__(self):
        return iter([{"Question": "Why are lamps lit for Diwali?", "id": "ck-1"}])


@pytest.mark.parametrize("pinned", [None, "pinned0123"])
def test_a_hub_source_is_read_at_the_commit_it_records(monkeypatch, pinned) -> None:
    import datasets

    from tasks.stage1 import sources

    asked: dict[str, str] = {}
    monkeypatch.setattr(sources, "hub_dataset_commit", lambda hub_id: asked.setdefault("head", "head4567"))
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda hub_id, config, split, revision: asked.setdefault("read", revision) and HubRows())
    spec = load_spec("culturax")
    real = spec.source.real.model_copy(update={"revision": pinned})
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"real": real})})
    loaded = load_source(spec, PROJECT_ROOT, real=True)
    expected = pinned or "head4567"
    assert asked["read"] == expected and loaded.fingerprint.revision == expected
    assert ("head" in asked) == (pinned is None)  # a pinned revision never asks for the head
    assert loaded.prompts.num_rows == 1
