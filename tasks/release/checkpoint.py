"""Finished shards on disk, so a killed build redoes only the shards it had not finished.

A shard's outputs are Parquet files plus a report written last: the report is the commit
marker, and every file is written to a temporary name and renamed into place, so a
SIGKILL mid-write leaves either a whole shard or none.

One build of a dataset at a time: `work_folder_lock` holds an exclusive `fcntl.flock` on
`<home>/<dataset>/.work/build.lock` for the whole build. A second build of the dataset waits
up to `ALIGNFORGE_BUILD_LOCK_WAIT_S` seconds (default 60: long enough for a build that is
publishing to finish, after which the second finds its version and reuses it), then fails
with `BuildInProgress` naming the holder. The kernel drops the lock when its process dies,
so a killed build never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import StageReport
from tasks.core import StepResult
from tasks.engines.pool import PoolUsage


logger = logging.getLogger(__name__)

LOCK_FILE = "build.lock"
LOCK_WAIT_VARIABLE = "ALIGNFORGE_BUILD_LOCK_WAIT_S"
DEFAULT_LOCK_WAIT_SECONDS = 60.0
LOCK_POLL_SECONDS = 0.2


class BuildInProgress(RuntimeError):
    """Another build of the same dataset holds its work folder."""


def lock_wait_seconds() -> float:
    return float(os.environ.get(LOCK_WAIT_VARIABLE, DEFAULT_LOCK_WAIT_SECONDS))


def lock_holder() -> dict[str, str]:
    """Who holds a lock, as written into the lock file for the build that waits on it."""
    holder = {"host": socket.gethostname(), "pid": str(os.getpid()),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
    return holder | ({"flow_run": flow_run} if flow_run else {})


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
    except ValueError:
        return "a build that is starting"  # it holds the lock and has not written who it is yet
    described = f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    return described + (f", flow run {holder['flow_run']}" if "flow_run" in holder else "")


@contextlib.contextmanager
def work_folder_lock(folder: Path, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold `folder`'s build lock (see the module docstring) for the duration of the block."""
    wait = lock_wait_seconds() if wait_seconds is None else wait_seconds
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        deadline = time.monotonic() + wait
        for attempt in itertools.count():
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 0:
                    handle.seek(0)
                    logger.info("%s: waiting up to %g s for the build held by %s", folder.parent.name, wait,
                                describe_holder(handle.read()))
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    raise BuildInProgress(f"{folder.parent.name}: another build of this dataset is running "
                                          f"({describe_holder(handle.read())}); waited {wait:g} s for {path}") from None
                time.sleep(LOCK_POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(lock_holder()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


class ShardCheckpoints:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, stage: str, index: int) -> Path:
        return self.root / stage / f"shard-{index:05d}"

    def load(self, stage: str, index: int) -> tuple[StepResult, StageReport, PoolUsage | None] | None:
        """A finished shard's result, report and the engine usage it caused (so a resumed
        build's manifest counts the models of the whole build)."""
        folder = self._folder(stage, index)
        marker = folder / "report.json"
        if not marker.is_file():
            return None
        saved = json.loads(marker.read_text())
        side = {name: pq.read_table(folder / f"side-{name}.parquet") for name in saved["side"]}
        result = StepResult(
            kept=pq.read_table(folder / "kept.parquet"), rejects=pq.read_table(folder / "rejects.parquet"),
            stats=saved["report"]["stats"], side=side, details=saved["details"], added=saved["added"],
            kept_units=saved["kept_units"],
            candidates_generated=saved["candidates_generated"], candidates_kept=saved["candidates_kept"],
        )
        usage = PoolUsage.from_json(saved["usage"]) if saved["usage"] is not None else None
        return result, StageReport.model_validate(saved["report"]), usage

    def save(self, stage: str, index: int, result: StepResult, report: StageReport,
             usage: PoolUsage | None = None) -> None:
        folder = self._folder(stage, index)
        folder.mkdir(parents=True, exist_ok=True)
        _write_table(folder / "kept.parquet", result.kept)
        _write_table(folder / "rejects.parquet", result.rejects)
        for name, table in result.side.items():
            _write_table(folder / f"side-{name}.parquet", table)
        marker = {"report": report.model_dump(mode="json"), "side": sorted(result.side), "details": result.details,
                  "added": result.added, "kept_units": result.kept_units,
                  "candidates_generated": result.candidates_generated, "candidates_kept": result.candidates_kept,
                  "usage": usage.to_json() if usage is not None else None}
        _write_bytes(folder / "report.json", json.dumps(marker).encode())

    def save_value(self, name: str, value: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_bytes(self.root / f"{name}.json", json.dumps(value).encode())

    def load_value(self, name: str) -> dict | None:
        path = self.root / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _temporary_name(path: Path) -> Path:
    # Unique per writer: two processes (or threads) writing one file never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _write_table(path: Path, table: pa.Table) -> None:
    temporary = _temporary_name(path)
    try:
        # Keep Arrow's list child names ("item") so a table read back is the table written,
        # down to the schema the published files embed.
        pq.write_table(table, temporary, use_compliant_nested_type=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_bytes(path: Path, data: bytes) -> None:
    temporary = _temporary_name(path)
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
