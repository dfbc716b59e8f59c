"""Finished shards on disk, so a killed build redoes only the shards it had not finished.

A shard's outputs are Parquet files plus a report written last: the report is the commit
marker, and every file is written to a temporary name and renamed into place, so a
SIGKILL mid-write leaves either a whole shard or none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import StageReport
from tasks.core import StepResult
from tasks.engines.pool import PoolUsage


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


def _write_table(path: Path, table: pa.Table) -> None:
    temporary = path.with_name(path.name + ".tmp")
    # Keep Arrow's list child names ("item") so a table read back is the table written,
    # down to the schema the published files embed.
    pq.write_table(table, temporary, use_compliant_nested_type=False)
    os.replace(temporary, path)


def _write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
