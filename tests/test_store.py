"""The dataset store: version identity, atomic publish, verification, diff, loading."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tasks.release.store as store_module
from schemas.manifest import Manifest, SourceFingerprint
from schemas.records import REJECT_SCHEMA, RESPONSE_SCHEMA, prompt_schema
from tasks.release.layout import new_version_id
from tasks.release.store import DatasetStore
from tasks.release.verify import CorruptVersionError

KEY_A = "3fa2c1d9e0" + "a" * 54
KEY_B = "77b0c1d9e0" + "b" * 54
SCHEMA = prompt_schema(["safety"])


def make_manifest(dataset: str, content_key: str) -> Manifest:
    return Manifest(
        dataset=dataset, version="pending", content_key=content_key, created_at="2026-11-23T10:15:00Z",
        alignforge_version="0.1.0", profile="local", spec={"name": dataset},
        source=SourceFingerprint(kind="sample", location="data/samples/demo.jsonl", sha256="0" * 64, rows=4),
        taxonomies={}, templates={}, models=[], seed=42, stages=[],
    )


def prompts(ids: list[str], labels: list[str | None] | None = None) -> pa.Table:
    labels = labels if labels is not None else ["Violence"] * len(ids)
    columns = {name: [None] * len(ids) for name in SCHEMA.names}
    columns.update(prompt_id=ids, text=[f"text of {i}" for i in ids], origin=["source"] * len(ids),
                   safety_label=labels, simhash=[i * 7919 for i in range(len(ids))])
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def responses(prompt_ids: list[str]) -> pa.Table:
    rows = [{"response_id": f"{p}-r", "prompt_id": p, "prompt_sha": "0" * 64, "target": "aligned",
             "generator_model": "m", "template_sha": "t", "attempt": 0, "feedback_round": 0,
             "text": "an answer", "finish_reason": "stop", "completion_tokens": 3, "judge_score": 8.0,
             "judge_critique": None, "passed": True} for p in prompt_ids]
    return pa.Table.from_pylist(rows, schema=RESPONSE_SCHEMA)


def rejects(ids: list[str]) -> pa.Table:
    rows = [{"record_id": i, "unit": "prompt", "stage": "dedup", "reason": "near_duplicate", "detail": None,
             "related_id": None, "text": None} for i in ids]
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


def publish(store: DatasetStore, key: str = KEY_A, train: list[str] | None = None, test: list[str] | None = None,
            labels: list[str | None] | None = None, dataset: str = "demo"):
    train = train if train is not None else ["p1", "p2", "p3"]
    test = test if test is not None else ["p4"]
    return store.publish(
        dataset, key,
        configs={"default": {"train": prompts(train, labels), "test": prompts(test)},
                 "responses": {"train": responses(train)}},
        side_tables={"rejects/prompts": rejects(["x1", "x2"])},
        manifest=make_manifest(dataset, key),
        card=lambda m: f"---\nlicense: cc-by-4.0\n---\n# {m.dataset} {m.version}\n",
        schemas={"default": SCHEMA, "responses": RESPONSE_SCHEMA, "rejects/prompts": REJECT_SCHEMA},
    )


def visible_entries(dataset_dir: Path) -> list[str]:
    return sorted(p.name for p in dataset_dir.iterdir() if not p.name.startswith(".tmp-"))


def test_publish_writes_the_layout_and_reads_back(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    published = publish(store)
    version = published.version
    assert re.fullmatch(r"\d{8}T\d{6}Z-3fa2c1d9e0", version)
    assert published.path == tmp_path / "demo" / version
    names = sorted(p.relative_to(published.path).as_posix() for p in published.path.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "data/default/test-00000-of-00001.parquet",
        "data/default/train-00000-of-00001.parquet",
        "data/responses/train-00000-of-00001.parquet",
        "manifest.json",
        "rejects/prompts.parquet",
    ]
    latest = tmp_path / "demo" / "latest"
    assert latest.is_file() and not latest.is_symlink()
    assert latest.read_text().strip() == version == store.latest("demo")

    manifest = store.manifest("demo")
    assert manifest.version == version
    assert manifest.splits == {"default": {"train": 3, "test": 1}, "responses": {"train": 3}}
    assert {f.path: f.rows for f in manifest.files}["rejects/prompts.parquet"] == 2
    assert f"# demo {version}" in (published.path / "README.md").read_text()
    for entry in manifest.files:
        file = published.path / entry.path
        assert entry.bytes == file.stat().st_size
        assert pq.ParquetFile(file).metadata.row_group(0).column(0).compression == "ZSTD"

    assert store.read("demo", split="train").equals(prompts(["p1", "p2", "p3"]))
    assert store.read("demo").column("prompt_id").to_pylist() == ["p1", "p2", "p3", "p4"]
    assert store.read("demo", version, config="responses").schema.equals(RESPONSE_SCHEMA)
    assert store.read_side("demo", version, "rejects/prompts").column("record_id").to_pylist() == ["x1", "x2"]
    assert store.datasets() == ["demo"]
    store.verify("demo", version)


def at(moment: str):
    """A stand-in for new_version_id that stamps versions at a fixed UTC time."""
    return lambda key: new_version_id(key, datetime.fromisoformat(moment))


def test_same_content_key_is_found_other_key_is_new(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    assert store.find_version("demo", KEY_A) is None
    first = publish(store, KEY_A)
    assert store.find_version("demo", KEY_A) == first.version

    second = publish(store, KEY_B, train=["p1", "p5"])
    assert second.version != first.version and second.version.endswith("-77b0c1d9e0")
    assert store.find_version("demo", KEY_B) == second.version
    assert store.latest("demo") == second.version
    infos = store.list_versions("demo")
    assert [(v.version, v.content_key, v.is_latest) for v in infos] == [
        (first.version, KEY_A, False), (second.version, KEY_B, True)]
    assert infos[1].rows["default"] == {"train": 2, "test": 1}
    assert infos[0].created_at == "2026-11-23T10:15:00Z"


def test_republishing_a_key_makes_a_newer_version_never_a_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DatasetStore(tmp_path)
    monkeypatch.setattr(store_module, "new_version_id", at("2026-11-23T10:15:00+00:00"))
    first = publish(store, KEY_A)
    assert first.version == "20261123T101500Z-3fa2c1d9e0"
    with pytest.raises(FileExistsError, match="already exists"):
        publish(store, KEY_A, train=["p7"])  # same key, same second
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [first.version, "latest"]
    assert store.read("demo", first.version, split="train").num_rows == 3

    monkeypatch.setattr(store_module, "new_version_id", at("2026-11-23T11:00:00+00:00"))
    rebuilt = publish(store, KEY_A, train=["p7"])  # e.g. a forced rebuild of unchanged inputs
    assert rebuilt.version == "20261123T110000Z-3fa2c1d9e0"
    assert store.find_version("demo", KEY_A) == rebuilt.version == store.latest("demo")


def test_large_splits_are_sharded_with_small_row_groups(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, max_rows_per_file=4, row_group_rows=3)
    ids = [f"p{i:02d}" for i in range(10)]
    published = publish(store, train=ids)
    shards = sorted((published.path / "data" / "default").glob("train-*.parquet"))
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in shards] == [4, 4, 2]
    assert all(pq.ParquetFile(p).metadata.row_group(0).num_rows <= 3 for p in shards)
    assert store.read("demo", split="train").column("prompt_id").to_pylist() == ids


def test_tables_are_cast_to_their_schema_or_refused(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    loose = prompts(["p1"]).set_column(SCHEMA.get_field_index("expansion_round"), "expansion_round",
                                       pa.array([1], pa.int64()))
    manifest = make_manifest("demo", KEY_A)
    published = store.publish("demo", KEY_A, {"default": {"train": loose}}, {}, manifest, "card",
                              schemas={"default": SCHEMA})
    assert store.read("demo", published.version).schema.field("expansion_round").type == pa.int32()

    missing_column = prompts(["p1"]).drop_columns(["text"])
    with pytest.raises(ValueError, match=r"missing \['text'\]"):
        store.publish("demo", KEY_B, {"default": {"train": missing_column}}, {}, make_manifest("demo", KEY_B),
                      "card", schemas={"default": SCHEMA})
    null_id = prompts(["p1"]).set_column(0, pa.field("prompt_id", pa.string()), pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="does not fit the schema"):
        store.publish("demo", KEY_B, {"default": {"train": null_id}}, {}, make_manifest("demo", KEY_B),
                      "card", schemas={"default": SCHEMA})
    with pytest.raises(ValueError, match="different schema"):
        store.publish("demo", KEY_B, {"default": {"train": prompts(["p1"]), "test": rejects(["x"])}}, {},
                      make_manifest("demo", KEY_B), "card")
    assert [v.version for v in store.list_versions("demo")] == [published.version]


@pytest.mark.parametrize("failure", ["second parquet write", "verify", "rename"])
def test_failed_publish_leaves_no_version_and_latest_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    store = DatasetStore(tmp_path)
    first = publish(store, KEY_A)
    before = visible_entries(tmp_path / "demo")

    def crash(*args, **kwargs):
        raise OSError(f"simulated crash during {failure}")

    if failure == "second parquet write":
        calls = []
        real_write = store_module.pq.write_table

        def write_then_crash(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                crash()
            return real_write(*args, **kwargs)

        monkeypatch.setattr(store_module.pq, "write_table", write_then_crash)
    elif failure == "verify":
        monkeypatch.setattr(store_module, "verify_folder", crash)
    else:
        monkeypatch.setattr(store_module.os, "rename", crash)

    with pytest.raises(OSError, match="simulated crash"):
        publish(store, KEY_B, train=["p9"])
    assert visible_entries(tmp_path / "demo") == before
    assert store.latest("demo") == first.version
    assert [v.version for v in store.list_versions("demo")] == [first.version]
    assert store.find_version("demo", KEY_B) is None


def test_leftovers_of_a_killed_publish_are_ignored_and_collected(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    first = publish(store, KEY_A)
    # What a kill -9 between writing and renaming leaves behind: a complete-looking temp folder.
    dead = tmp_path / "demo" / f".tmp-{first.version[:-10]}77b0c1d9e0-deadbeef"
    (dead / "data" / "default").mkdir(parents=True)
    for source in first.path.rglob("*"):
        if source.is_file():
            target = dead / source.relative_to(first.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    dead_pointer = tmp_path / "demo" / ".latest-0badf00d"
    dead_pointer.write_text("garbage\n")

    assert [v.version for v in store.list_versions("demo")] == [first.version]
    assert store.find_version("demo", KEY_A) == first.version
    assert store.latest("demo") == first.version

    assert store.gc() == []  # fresh leftovers may belong to a running publish
    old = time.time() - 7200
    for path in [dead, *dead.rglob("*"), dead_pointer]:
        os.utime(path, (old, old))
    assert sorted(store.gc()) == sorted([dead, dead_pointer])
    assert visible_entries(tmp_path / "demo") == [first.version, "latest"]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [first.version, "latest"]

    (tmp_path / "demo" / ".tmp-fresh").mkdir()
    assert store.gc(force=True) == [tmp_path / "demo" / ".tmp-fresh"]


def test_checksums_are_verified_on_read(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    published = publish(store)
    shard = published.path / "data" / "default" / "train-00000-of-00001.parquet"
    payload = bytearray(shard.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    shard.write_bytes(bytes(payload))
    with pytest.raises(CorruptVersionError, match="checksum"):
        store.verify("demo", published.version)
    with pytest.raises(CorruptVersionError, match="checksum"):
        store.read("demo", split="train")
    assert store.read("demo", split="test").num_rows == 1  # untouched files still read

    shard.unlink()
    assert store.find_version("demo", KEY_A) is None  # a damaged version is never reused
    with pytest.raises(CorruptVersionError, match="missing"):
        store.verify("demo", published.version)


def test_stray_files_and_bad_manifests_fail_verification(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    published = publish(store)
    stray = published.path / "data" / "default" / "train-00009-of-00009.parquet"
    pq.write_table(prompts(["ghost"]), stray)
    with pytest.raises(CorruptVersionError, match="not in the manifest"):
        store.verify("demo", published.version)
    stray.unlink()
    (published.path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptVersionError, match="not a valid manifest"):
        store.manifest("demo", published.version)


@pytest.mark.parametrize("bad", ["..", "../evil", "a/b", "/abs", "Demo", "", "x" * 70, "demo\n"])
def test_path_traversal_names_are_rejected(tmp_path: Path, bad: str) -> None:
    store = DatasetStore(tmp_path)
    with pytest.raises(ValueError, match="invalid dataset name"):
        store.latest(bad)
    with pytest.raises(ValueError, match="invalid dataset name"):
        store.publish(bad, KEY_A, {"default": {"train": prompts(["p1"])}}, {}, make_manifest(bad, KEY_A), "card")
    with pytest.raises(ValueError, match="invalid config name"):
        store.publish("demo", KEY_A, {bad: {"train": prompts(["p1"])}}, {}, make_manifest("demo", KEY_A), "card")
    with pytest.raises(ValueError, match="invalid split name"):
        store.publish("demo", KEY_A, {"default": {bad: prompts(["p1"])}}, {}, make_manifest("demo", KEY_A), "card")
    with pytest.raises(ValueError, match="invalid side table"):
        store.publish("demo", KEY_A, {"default": {"train": prompts(["p1"])}}, {f"rejects/{bad}": rejects(["x"])},
                      make_manifest("demo", KEY_A), "card")
    assert not (tmp_path / "demo").exists()


def test_bad_version_ids_content_keys_and_side_names_are_rejected(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    publish(store)
    for version in ["../demo", "latest", "20261123T101500Z-3fa2c1d9e0/..", "20261123-3fa2c1d9e0"]:
        with pytest.raises(ValueError, match="invalid version id"):
            store.path("demo", version)
    with pytest.raises(ValueError, match="invalid content key"):
        store.find_version("demo", "../../etc")
    with pytest.raises(ValueError, match="invalid side table"):
        store.read_side("demo", None, "other/prompts")  # only rejects/ and side/ hold side tables
    with pytest.raises(KeyError, match="no side table"):
        store.read_side("demo", None, "prompts")
    with pytest.raises(ValueError, match="manifest is for"):
        store.publish("demo", KEY_B, {"default": {"train": prompts(["p1"])}}, {}, make_manifest("demo", KEY_A), "")


def test_diff_counts_rows_added_removed_kept_per_label(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    old = publish(store, KEY_A, train=["a", "b", "c"], test=["t"], labels=["Violence", "Privacy", None]).version
    new = publish(store, KEY_B, train=["b", "c", "d"], test=["t"], labels=["Fraud", None, "Violence"]).version

    overall = store.diff("demo", old, new)
    assert overall.to_dict("records") == [{"added": 1, "removed": 1, "kept": 3}]

    per_label = store.diff("demo", old, new, by="safety_label")
    records = {("<none>" if pd.isna(row["safety_label"]) else row["safety_label"]):
               {k: row[k] for k in ("added", "removed", "kept", "relabelled")} for row in per_label.to_dict("records")}
    assert records == {
        "Violence": {"added": 1, "removed": 1, "kept": 1, "relabelled": 0},  # d added, a removed, t kept
        "Fraud": {"added": 0, "removed": 0, "kept": 1, "relabelled": 1},  # b: Privacy -> Fraud
        "<none>": {"added": 0, "removed": 0, "kept": 1, "relabelled": 0},  # c: None -> None
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.sets(st.sampled_from("abcdefgh"), min_size=1), new=st.sets(st.sampled_from("abcdefgh"), min_size=1))
def test_diff_matches_set_arithmetic(tmp_path_factory: pytest.TempPathFactory, old: set[str], new: set[str]) -> None:
    store = DatasetStore(tmp_path_factory.mktemp("diff"))
    manifest_a, manifest_b = make_manifest("demo", KEY_A), make_manifest("demo", KEY_B)
    v1 = store.publish("demo", KEY_A, {"default": {"train": prompts(sorted(old))}}, {}, manifest_a, "card").version
    v2 = store.publish("demo", KEY_B, {"default": {"train": prompts(sorted(new))}}, {}, manifest_b, "card").version
    counts = store.diff("demo", v1, v2).to_dict("records")[0]
    assert counts == {"added": len(new - old), "removed": len(old - new), "kept": len(old & new)}


def test_versions_load_with_the_datasets_library(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, max_rows_per_file=2)
    published = publish(store, train=["p1", "p2", "p3"], test=["p4"])
    cache = tmp_path / "hf-cache"

    by_folder = datasets.load_dataset("parquet", data_dir=str(published.path / "data" / "default"),
                                      cache_dir=str(cache))
    assert sorted(by_folder) == ["test", "train"]
    assert by_folder["train"].num_rows == 3 and by_folder["test"].num_rows == 1
    assert by_folder["train"].column_names == SCHEMA.names
    assert sorted(by_folder["train"]["prompt_id"]) == ["p1", "p2", "p3"]

    responses_files = {"train": str(published.path / "data" / "responses" / "train-*.parquet")}
    by_files = datasets.load_dataset("parquet", data_files=responses_files, cache_dir=str(cache))
    assert by_files["train"].column_names == RESPONSE_SCHEMA.names
    assert by_files["train"]["prompt_id"] == ["p1", "p2", "p3"]


def test_bare_side_table_names_go_to_rejects_or_side(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    tables = {"rejects": rejects(["x1"]), "annotations": pa.table({"prompt_id": ["p1"], "rater": ["r1"]}),
              "rejects/responses": rejects(["x2"])}
    published = store.publish("demo", KEY_A, {"default": {"train": prompts(["p1"])}}, tables,
                              make_manifest("demo", KEY_A), "card")
    side_files = sorted(f.path for f in store.manifest("demo").files if not f.path.startswith("data/"))
    assert side_files == ["rejects/rejects.parquet", "rejects/responses.parquet", "side/annotations.parquet"]
    assert store.read_side("demo", published.version, "rejects").column("record_id").to_pylist() == ["x1"]
    assert store.read_side("demo", None, "annotations").column("rater").to_pylist() == ["r1"]
    assert store.read_side("demo", None, "side/annotations").num_rows == 1
    with pytest.raises(ValueError, match="share a file"):
        store.publish("demo", KEY_B, {"default": {"train": prompts(["p1"])}},
                      {"rejects": rejects(["x"]), "rejects/rejects": rejects(["y"])}, make_manifest("demo", KEY_B), "")
