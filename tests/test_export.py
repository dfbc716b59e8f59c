"""Export to the Hub, against an in-process fake of the Hub's HTTP API.

The fake implements only what huggingface_hub calls for create_repo, create_commit
(preupload, the LFS batch + PUT upload, the NDJSON commit, the tree listing and the
README metadata check) and create_tag, plus scripted failures. It answers "lfs" for
Parquet files and "regular" (inline base64) for the rest, as the Hub does for dataset
repos. Xet storage is switched off in these tests so LFS files take the plain LFS
transfer, which the fake can serve; the Xet transfer itself is not exercised offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import huggingface_hub.constants
import pyarrow as pa
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import tasks.release.export as export_module
from schemas.manifest import Manifest, SourceFingerprint
from schemas.records import REJECT_SCHEMA
from tasks.release.export import ExportError, check_repo_id, export_version, resolve_token
from tasks.release.store import DatasetStore

TOKEN = "hf_fakeTOKEN0123456789abcdefSECRET"
KEY_A = "aaaa000000" + "0" * 54
KEY_B = "bbbb000000" + "0" * 54
CARD = """---
license: cc-by-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/default/train-*.parquet
---
# demo
"""


def _git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Just enough of the Hub's HTTP API for create_repo, create_commit and create_tag."""

    def __init__(self) -> None:
        self.base_url = ""
        self.repos: dict[str, dict] = {}  # "owner/name" -> {"files", "lfs_paths", "commits", "tags"}
        self.lfs_objects: dict[str, bytes] = {}
        self.failures: dict[str, list[tuple[int, str]]] = {}  # route -> (status, message) to answer first
        self.calls: list[str] = []
        self.app = self._build_app()

    def fail(self, route: str, *answers: tuple[int, str]) -> None:
        self.failures.setdefault(route, []).extend(answers)

    def _scripted_failure(self, route: str) -> Response | None:
        self.calls.append(route)
        if self.failures.get(route):
            status, message = self.failures[route].pop(0)
            return JSONResponse({"error": message}, status_code=status)
        return None

    def _unauthorized(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "Invalid credentials"}, status_code=401)
        return None

    def _commit(self, repo: dict, summary: str, files: dict[str, bytes], lfs_paths: set[str]) -> str:
        parent = repo["commits"][-1]["oid"] if repo["commits"] else ""
        digest = hashlib.sha1(parent.encode() + summary.encode())
        for path in sorted(files):
            digest.update(path.encode() + _git_blob_sha(files[path]).encode())
        oid = digest.hexdigest()
        repo["files"], repo["lfs_paths"] = files, lfs_paths
        repo["commits"].append({"oid": oid, "summary": summary})
        return oid

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/api/repos/create")
        async def create_repo(request: Request) -> Response:
            if (failed := self._scripted_failure("create_repo") or self._unauthorized(request)) is not None:
                return failed
            payload = await request.json()
            repo_id = f"{payload['organization']}/{payload['name']}"
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this dataset repo",
                                     "url": f"{self.base_url}/datasets/{repo_id}"}, status_code=409)
            repo = {"files": {}, "lfs_paths": set(), "commits": [], "tags": {}, "type": payload.get("type")}
            self.repos[repo_id] = repo
            self._commit(repo, "initial commit", {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"},
                         set())
            return JSONResponse({"url": f"{self.base_url}/datasets/{repo_id}"})

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request) -> Response:
            content = (await request.json())["content"]
            try:
                yaml.safe_load(content.split("---")[1])
            except (yaml.YAMLError, IndexError) as err:
                return JSONResponse({"errors": [{"message": str(err)}]}, status_code=400)
            return JSONResponse({"errors": [], "warnings": []})

        @app.get("/api/datasets/{owner}/{name}/tree/{revision}")
        async def tree(owner: str, name: str, revision: str, request: Request) -> Response:
            if (failed := self._scripted_failure("tree") or self._unauthorized(request)) is not None:
                return failed
            repo = self.repos[f"{owner}/{name}"]
            entries = []
            for path, content in sorted(repo["files"].items()):
                entry = {"type": "file", "path": path, "size": len(content), "oid": _git_blob_sha(content)}
                if path in repo["lfs_paths"]:
                    entry["lfs"] = {"oid": hashlib.sha256(content).hexdigest(), "size": len(content),
                                    "pointerSize": 134}
                entries.append(entry)
            return JSONResponse(entries)

        @app.get("/api/datasets/{owner}/{name}/revision/{revision}")
        async def dataset_info(owner: str, name: str, revision: str, request: Request) -> Response:
            if (failed := self._scripted_failure("info") or self._unauthorized(request)) is not None:
                return failed
            repo_id = f"{owner}/{name}"
            return JSONResponse({"id": repo_id, "sha": self.repos[repo_id]["commits"][-1]["oid"]})

        @app.post("/api/datasets/{owner}/{name}/preupload/{revision}")
        async def preupload(owner: str, name: str, revision: str, request: Request) -> Response:
            if (failed := self._scripted_failure("preupload") or self._unauthorized(request)) is not None:
                return failed
            repo = self.repos[f"{owner}/{name}"]
            answers = []
            for file in (await request.json())["files"]:
                lfs = file["path"].endswith(".parquet")
                current = repo["files"].get(file["path"])
                oid = None
                if current is not None:
                    oid = hashlib.sha256(current).hexdigest() if lfs else _git_blob_sha(current)
                answers.append({"path": file["path"], "uploadMode": "lfs" if lfs else "regular",
                                "shouldIgnore": False, "oid": oid})
            return JSONResponse({"files": answers})

        @app.post("/datasets/{owner}/{name}.git/info/lfs/objects/batch")
        async def lfs_batch(owner: str, name: str, request: Request) -> Response:
            if (failed := self._scripted_failure("lfs_batch") or self._unauthorized(request)) is not None:
                return failed
            objects = []
            for item in (await request.json())["objects"]:
                answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                if item["oid"] not in self.lfs_objects:
                    answer["actions"] = {"upload": {"href": f"{self.base_url}/lfs-storage/{item['oid']}"}}
                objects.append(answer)
            return JSONResponse({"transfer": "basic", "objects": objects})

        @app.put("/lfs-storage/{oid}")
        async def lfs_put(oid: str, request: Request) -> Response:
            body = await request.body()
            if hashlib.sha256(body).hexdigest() != oid:
                return JSONResponse({"error": "checksum mismatch"}, status_code=400)
            self.lfs_objects[oid] = body
            self.calls.append("lfs_put")
            return Response(status_code=200)

        @app.post("/api/datasets/{owner}/{name}/commit/{revision}")
        async def commit(owner: str, name: str, revision: str, request: Request) -> Response:
            if (failed := self._scripted_failure("commit") or self._unauthorized(request)) is not None:
                return failed
            repo = self.repos[f"{owner}/{name}"]
            files, lfs_paths = dict(repo["files"]), set(repo["lfs_paths"])
            summary = ""
            for line in (await request.body()).splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    summary = value["summary"]
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                    lfs_paths.discard(value["path"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in self.lfs_objects:
                        return JSONResponse({"error": f"LFS object {value['oid']} was never uploaded"},
                                            status_code=422)
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                    lfs_paths.add(value["path"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"])
                    lfs_paths.discard(value["path"])
                else:
                    return JSONResponse({"error": f"unsupported operation {item['key']}"}, status_code=400)
            oid = self._commit(repo, summary, files, lfs_paths)
            return JSONResponse({"commitUrl": f"{self.base_url}/datasets/{owner}/{name}/commit/{oid}",
                                 "commitOid": oid, "pullRequestUrl": None})

        @app.post("/api/datasets/{owner}/{name}/tag/{revision}")
        async def tag(owner: str, name: str, revision: str, request: Request) -> Response:
            if (failed := self._scripted_failure("tag") or self._unauthorized(request)) is not None:
                return failed
            repo = self.repos[f"{owner}/{name}"]
            payload = await request.json()
            if payload["tag"] in repo["tags"]:
                return JSONResponse({"error": "Tag already exists"}, status_code=409)
            if revision not in {c["oid"] for c in repo["commits"]}:
                return JSONResponse({"error": f"unknown revision {revision}"}, status_code=404)
            repo["tags"][payload["tag"]] = revision
            return JSONResponse({})

        return app

    def write_repo(self, repo_id: str, folder: Path) -> Path:
        """Materialise the repo's current files, as a clone would."""
        for path, content in self.repos[repo_id]["files"].items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return folder


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login leaks in
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake = FakeHub()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake hub did not start"
        time.sleep(0.01)
    fake.base_url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    yield fake
    server.should_exit = True
    thread.join(timeout=5)


def make_manifest(content_key: str) -> Manifest:
    return Manifest(
        dataset="demo", version="pending", content_key=content_key, created_at="2026-11-23T10:15:00Z",
        alignforge_version="0.1.0", profile="local", spec={},
        source=SourceFingerprint(kind="sample", location="data/samples/demo.jsonl", sha256="0" * 64, rows=3),
        taxonomies={}, templates={}, models=[], seed=42, stages=[],
    )


def publish(store: DatasetStore, key: str, ids: list[str]) -> str:
    table = pa.table({"prompt_id": ids, "text": [f"text {i}" for i in ids]})
    rejects = REJECT_SCHEMA.empty_table()
    side = pa.table({"prompt_id": ids, "rater": ["r1"] * len(ids)})
    return store.publish("demo", key, {"default": {"train": table}},
                         {"rejects/prompts": rejects, "side/annotations": side}, make_manifest(key), CARD).version


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_is_one_tagged_commit_with_identical_bytes(hub: FakeHub, tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "home", max_rows_per_file=2)
    version = publish(store, KEY_A, ["p1", "p2", "p3"])
    result = export_version(store, "demo", version, "org/demo", token=TOKEN, endpoint=hub.base_url)

    repo = hub.repos["org/demo"]
    assert [c["summary"] for c in repo["commits"]] == ["initial commit", f"demo {version}"]  # exactly one commit
    assert result.commit_sha == repo["commits"][-1]["oid"] and result.commit_sha in result.commit_url
    assert result.tag == version and repo["tags"] == {version: result.commit_sha}
    uploaded = {path: content for path, content in repo["files"].items() if path != ".gitattributes"}
    assert uploaded == local_files(store.path("demo", version))
    assert repo["lfs_paths"] == {p for p in uploaded if p.endswith(".parquet")}  # parquet went through LFS
    assert hub.calls.count("lfs_put") == 4  # two train shards, rejects, annotations
    assert hub.calls.count("commit") == 1

    exported = hub.write_repo("org/demo", tmp_path / "clone")
    cache = str(tmp_path / "hf-cache")
    by_folder = datasets.load_dataset("parquet", data_dir=str(exported / "data" / "default"), cache_dir=cache)
    assert sorted(by_folder["train"]["prompt_id"]) == ["p1", "p2", "p3"]
    by_card = datasets.load_dataset(str(exported), "default", cache_dir=cache)
    assert by_card["train"].column_names == ["prompt_id", "text"]


def test_transient_errors_are_retried_with_growing_waits(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(export_module.time, "sleep", waits.append)
    store = DatasetStore(tmp_path / "home")
    version = publish(store, KEY_A, ["p1"])
    hub.fail("create_repo", (503, "Service Unavailable"))
    hub.fail("commit", (503, "Service Unavailable"), (429, "Too Many Requests"))
    hub.fail("tag", (502, "Bad Gateway"))
    with caplog.at_level(logging.WARNING, logger="tasks.release.export"):
        result = export_version(store, "demo", version, "org/demo", token=TOKEN, endpoint=hub.base_url,
                                backoff_seconds=0.5)
    assert hub.calls.count("create_repo") == 2 and hub.calls.count("commit") == 3 and hub.calls.count("tag") == 2
    assert hub.repos["org/demo"]["tags"] == {version: result.commit_sha}
    assert len(hub.repos["org/demo"]["commits"]) == 2  # the failed attempts committed nothing
    assert len(waits) == 4 and waits[2] > waits[1] >= 0.5  # commit: first wait, then a doubled one
    assert caplog.text.count("retry") == 4 and "HTTP 503" in caplog.text and "HTTP 429" in caplog.text


def test_retries_give_up_after_max_retries(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module.time, "sleep", lambda seconds: None)
    store = DatasetStore(tmp_path / "home")
    version = publish(store, KEY_A, ["p1"])
    hub.fail("commit", *[(500, "Internal Error")] * 3)
    with pytest.raises(ExportError) as raised:
        export_version(store, "demo", version, "org/demo", token=TOKEN, endpoint=hub.base_url, max_retries=2)
    assert raised.value.status_code == 500
    assert hub.calls.count("commit") == 3
    assert hub.repos["org/demo"]["tags"] == {}


def test_client_errors_are_not_retried_and_the_token_never_shows(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(export_module.time, "sleep", lambda seconds: None)
    store = DatasetStore(tmp_path / "home")
    version = publish(store, KEY_A, ["p1"])
    # A server that echoes the credential back in its error text: the worst case for leaks.
    hub.fail("commit", (403, f"token {TOKEN} has no write access to org/demo"))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ExportError) as raised:
            export_version(store, "demo", version, "org/demo", token=TOKEN, endpoint=hub.base_url)
        hub.fail("commit", (503, f"overloaded while serving {TOKEN}"))
        export_version(store, "demo", version, "org/other", token=TOKEN, endpoint=hub.base_url)
    assert raised.value.status_code == 403
    assert hub.calls.count("commit") == 3  # 403 once (no retry), then 503 + success
    assert "<hf-token>" in str(raised.value) and TOKEN not in str(raised.value)
    assert raised.value.__suppress_context__
    captured = capsys.readouterr()
    assert "retry" in caplog.text and "<hf-token>" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in captured.out and TOKEN not in captured.err


def test_reexport_replaces_stale_shards_and_is_idempotent(hub: FakeHub, tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "home", max_rows_per_file=1)
    first = publish(store, KEY_A, ["p1", "p2", "p3"])
    export_version(store, "demo", first, "org/demo", token=TOKEN, endpoint=hub.base_url)
    second = publish(store, KEY_B, ["p9"])
    result = export_version(store, "demo", second, "org/demo", token=TOKEN, endpoint=hub.base_url)
    repo = hub.repos["org/demo"]
    assert sorted(p for p in repo["files"] if p.startswith("data/")) == ["data/default/train-00000-of-00001.parquet"]
    assert set(repo["tags"]) == {first, second}

    commits = len(repo["commits"])
    again = export_version(store, "demo", second, "org/demo", token=TOKEN, endpoint=hub.base_url)
    assert len(repo["commits"]) == commits and again.commit_sha == result.commit_sha


def test_token_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "get_token", lambda: "hf_stored")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert resolve_token(None) == "hf_stored"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert resolve_token(None) == "hf_env"
    assert resolve_token("hf_arg") == "hf_arg"
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(export_module, "get_token", lambda: None)
    with pytest.raises(ExportError, match="no Hugging Face token"):
        resolve_token(None)


@pytest.mark.parametrize("bad", ["demo", "a/b/c", "../demo", "org/..", "org/a b", "org/", "/demo", "org/a--b", ""])
def test_bad_repo_ids_are_rejected_before_any_request(hub: FakeHub, tmp_path: Path, bad: str) -> None:
    store = DatasetStore(tmp_path / "home")
    version = publish(store, KEY_A, ["p1"])
    with pytest.raises(ValueError, match="invalid repo id"):
        export_version(store, "demo", version, bad, token=TOKEN, endpoint=hub.base_url)
    assert hub.calls == []
    assert check_repo_id("org-1/demo.v2_x") == "org-1/demo.v2_x"
