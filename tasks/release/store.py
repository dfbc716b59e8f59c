"""The dataset store: the only code that writes dataset versions (layout in
``tasks.release.layout``, checks on reading in ``tasks.release.verify``).

A version is written into a hidden ``.tmp-*`` folder, verified by re-reading every file,
fsynced, and renamed into place in one step; only then does ``latest`` move. A crash at
any point leaves either the previous state or a ``.tmp-*`` folder that every reader
ignores and ``gc()`` removes. ``latest`` is a file replaced with ``os.replace`` rather
than a symlink, so the layout also works where symlinks do not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.manifest import FileEntry, Manifest
from tasks.release.layout import (
    CARD_FILE, DATA_FOLDER, LATEST_FILE, MANIFEST_FILE, VALID_NAME, VERSION_ID, check_content_key, check_name,
    check_version, new_version_id, shard_file_name, side_table_path,
)
from tasks.release.verify import CorruptVersionError, load_manifest, read_verified, verify_folder

logger = logging.getLogger(__name__)
_TEMP_PREFIX = ".tmp-"
_LATEST_TEMP_PREFIX = ".latest-"
_HASH_CHUNK = 1 << 20


class VersionNotFoundError(FileNotFoundError):
    """The dataset has no published version, or not the one asked for."""


@dataclass(frozen=True)
class PublishedVersion:
    path: Path
    version: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str
    rows: dict[str, dict[str, int]]  # config -> split -> rows
    content_key: str
    is_latest: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals renames itself
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_text_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as sink:
        sink.write(text)
        sink.flush()
        os.fsync(sink.fileno())


def _conform(table: pa.Table, schema: pa.Schema | None, what: str) -> pa.Table:
    """Cast a table to its declared schema, or fail naming the columns that do not fit."""
    if not isinstance(table, pa.Table):
        raise TypeError(f"{what}: expected a pyarrow Table, got {type(table).__name__}")
    if schema is None:
        return table
    missing = [name for name in schema.names if name not in table.column_names]
    unexpected = [name for name in table.column_names if name not in schema.names]
    if missing or unexpected:
        raise ValueError(f"{what}: columns do not match the schema (missing {missing}, unexpected {unexpected})")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError) as err:
        raise ValueError(f"{what}: does not fit the schema: {err}") from err


class DatasetStore:
    """Versioned Parquet datasets under one home folder (see the module docstring for the layout)."""

    def __init__(
        self,
        home: Path,
        *,
        max_rows_per_file: int = 100_000,
        row_group_rows: int = 10_000,
        row_group_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if min(max_rows_per_file, row_group_rows, row_group_bytes) < 1:
            raise ValueError("file and row-group sizes must be positive")
        self.home = Path(home)
        self.max_rows_per_file = max_rows_per_file
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes

    # ---- reading ---------------------------------------------------------------------

    def datasets(self) -> list[str]:
        """Datasets with at least one published version."""
        if not self.home.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.home.iterdir()
            if entry.is_dir() and VALID_NAME.fullmatch(entry.name) and any(self._version_names(entry.name))
        )

    def latest(self, dataset: str) -> str | None:
        pointer = self._dataset_dir(dataset) / LATEST_FILE
        if not pointer.is_file():
            return None
        version = pointer.read_text(encoding="utf-8").strip()
        if not VERSION_ID.fullmatch(version) or not (self._dataset_dir(dataset) / version).is_dir():
            raise CorruptVersionError(f"{dataset}: {LATEST_FILE} points at {version!r}, which is not a version here")
        return version

    def path(self, dataset: str, version: str | None = None) -> Path:
        """The folder of a version (the latest when ``version`` is None)."""
        resolved = version if version is not None else self.latest(dataset)
        if resolved is None:
            raise VersionNotFoundError(f"{dataset}: no published version")
        folder = self._dataset_dir(dataset) / check_version(resolved)
        if not folder.is_dir():
            raise VersionNotFoundError(f"{dataset}: no version {resolved}")
        return folder

    def manifest(self, dataset: str, version: str | None = None) -> Manifest:
        return load_manifest(self.path(dataset, version))

    def list_versions(self, dataset: str) -> list[VersionInfo]:
        """Published versions, oldest first; ``.tmp-*`` folders of unfinished publishes are not versions."""
        latest = self.latest(dataset)
        infos = []
        for version in sorted(self._version_names(dataset)):
            manifest = load_manifest(self._dataset_dir(dataset) / version)
            infos.append(
                VersionInfo(
                    version=version,
                    created_at=manifest.created_at,
                    rows=manifest.splits,
                    content_key=manifest.content_key,
                    is_latest=version == latest,
                )
            )
        return infos

    def find_version(self, dataset: str, content_key: str) -> str | None:
        """The newest intact version built from ``content_key``, if any.

        Intact here means the manifest reads and every file is present with its size
        (checksums are checked by ``read`` and ``verify``). A damaged version is skipped
        with a warning rather than reused, so the caller rebuilds.
        """
        check_content_key(content_key)
        for version in sorted(self._version_names(dataset), reverse=True):
            folder = self._dataset_dir(dataset) / version
            try:
                manifest = load_manifest(folder)
                if manifest.content_key != content_key:
                    continue
                verify_folder(folder, manifest, version, read_data=False)
            except CorruptVersionError as err:
                logger.warning("skipping damaged version: %s", err)
                continue
            return version
        return None

    def verify(self, dataset: str, version: str | None = None) -> None:
        """Re-read every file of a version; raise CorruptVersionError on any disagreement."""
        folder = self.path(dataset, version)
        verify_folder(folder, load_manifest(folder), folder.name, read_data=True)

    def read(
        self,
        dataset: str,
        version: str | None = None,
        config: str = "default",
        split: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """One config's rows (one split, or all splits in manifest order), checksums verified."""
        folder = self.path(dataset, version)
        manifest = load_manifest(folder)
        if config not in manifest.splits:
            raise KeyError(f"{dataset} {folder.name}: no config {config!r} (has {sorted(manifest.splits)})")
        splits = [split] if split is not None else list(manifest.splits[config])
        unknown = [name for name in splits if name not in manifest.splits[config]]
        if unknown:
            raise KeyError(f"{dataset} {folder.name}: config {config!r} has no split {unknown[0]!r}")
        prefix = f"{DATA_FOLDER}/{config}/"
        tables = [
            read_verified(folder, entry, columns)
            for name in splits
            for entry in manifest.files
            if entry.path.startswith(f"{prefix}{name}-")
        ]
        return pa.concat_tables(tables)

    def read_side(self, dataset: str, version: str | None, name: str) -> pa.Table:
        """A side table by the name it was published under (see ``side_table_path``)."""
        relative = side_table_path(name)
        folder = self.path(dataset, version)
        manifest = load_manifest(folder)
        entry = next((entry for entry in manifest.files if entry.path == relative), None)
        if entry is None:
            raise KeyError(f"{dataset} {folder.name}: no side table {name!r}")
        return read_verified(folder, entry)

    def diff(
        self,
        dataset: str,
        v1: str,
        v2: str,
        key: str = "prompt_id",
        by: str | None = None,
        config: str = "default",
    ) -> pd.DataFrame:
        """Rows added, removed and kept from ``v1`` to ``v2`` (all splits of one config).

        Without ``by``: one row of counts. With ``by`` (e.g. a label column): one row per
        value, counting added rows under their new value, removed rows under their old
        value, kept rows under their new value, and ``relabelled`` kept rows whose value
        changed. Missing values form their own group.
        """
        columns = [key] if by is None else [key, by]
        old = self._keyed_frame(dataset, v1, config, columns)
        new = self._keyed_frame(dataset, v2, config, columns)
        merged = old.merge(new, on=key, how="outer", suffixes=("_old", "_new"), indicator=True)
        status = merged["_merge"].map({"left_only": "removed", "right_only": "added", "both": "kept"})
        counts = ["added", "removed", "kept"]
        if by is None:
            tally = status.value_counts()
            return pd.DataFrame([{name: int(tally.get(name, 0)) for name in counts}])
        before, after = merged[f"{by}_old"], merged[f"{by}_new"]
        kept = status == "kept"
        changed = kept & ~((before == after) | (before.isna() & after.isna()))
        frame = pd.DataFrame({
            by: after.where(status != "removed", before),
            "status": status,
            "relabelled": changed.astype(int),
        })
        grouped = frame.groupby(by, dropna=False, sort=True)
        result = grouped["status"].value_counts().unstack(fill_value=0).reindex(columns=counts, fill_value=0)
        result["relabelled"] = grouped["relabelled"].sum()
        result.columns.name = None
        return result.reset_index().astype({name: int for name in [*counts, "relabelled"]})

    # ---- writing ---------------------------------------------------------------------

    def publish(
        self,
        dataset: str,
        content_key: str,
        configs: Mapping[str, Mapping[str, pa.Table]],
        side_tables: Mapping[str, pa.Table],
        manifest: Manifest,
        card: Callable[[Manifest], str] | str,
        schemas: Mapping[str, pa.Schema] | None = None,
    ) -> PublishedVersion:
        """Write a new version atomically and make it ``latest``.

        ``configs`` maps config -> split -> table; ``side_tables`` maps a name (see
        ``side_table_path``) -> table; ``schemas`` maps a config or side-table name to the
        schema its tables are cast to (a table that does not fit raises ValueError).
        ``card`` is the README text, or a function of the final manifest (files, splits and
        version filled in) that renders it. Reusing a version with the same content key is
        the caller's decision (``find_version``); publishing the same key again makes a new
        version, which ``find_version`` then prefers as the newest.
        """
        check_name("dataset", dataset)
        check_content_key(content_key)
        if manifest.dataset != dataset or manifest.content_key != content_key:
            raise ValueError(
                f"manifest is for {manifest.dataset!r} / {manifest.content_key!r}, not {dataset!r} / {content_key!r}"
            )
        plan = self._plan_files(configs, side_tables, schemas or {})
        version = new_version_id(content_key)
        dataset_dir = self._dataset_dir(dataset)
        final_dir = dataset_dir / version
        dataset_dir.mkdir(parents=True, exist_ok=True)
        temp_dir = dataset_dir / f"{_TEMP_PREFIX}{version}-{secrets.token_hex(4)}"
        temp_dir.mkdir()
        try:
            files = [self._write_parquet(temp_dir, relative, table) for relative, table in plan]
            splits: dict[str, dict[str, int]] = {
                config: {split: table.num_rows for split, table in split_tables.items()}
                for config, split_tables in configs.items()
            }
            final = manifest.model_copy(update={"version": version, "files": files, "splits": splits})
            _write_text_durably(temp_dir / MANIFEST_FILE, final.model_dump_json(indent=2))
            _write_text_durably(temp_dir / CARD_FILE, card(final) if callable(card) else card)
            verify_folder(temp_dir, final, version, read_data=True)
            for folder in sorted((p for p in temp_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _fsync_dir(folder)
            _fsync_dir(temp_dir)
            if final_dir.exists():  # same key published twice within a second: never merge into it
                raise FileExistsError(f"{dataset}: version folder {version} already exists")
            os.rename(temp_dir, final_dir)
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        _fsync_dir(dataset_dir)
        self._set_latest(dataset, version)
        logger.info("%s: published %s (%d files)", dataset, version, len(files))
        return PublishedVersion(final_dir, version)

    def gc(self, *, older_than_seconds: float = 3600.0, force: bool = False) -> list[Path]:
        """Remove leftovers of interrupted publishes; returns what was removed.

        A leftover's age is that of the newest file inside it, so a long publish that is
        still writing is never mistaken for a dead one. ``force`` removes all leftovers
        (only safe when no publish is running).
        """
        removed: list[Path] = []
        if not self.home.is_dir():
            return removed
        now = time.time()
        for dataset_dir in sorted(p for p in self.home.iterdir() if p.is_dir() and VALID_NAME.fullmatch(p.name)):
            for leftover in sorted(dataset_dir.iterdir()):
                if not leftover.name.startswith((_TEMP_PREFIX, _LATEST_TEMP_PREFIX)):
                    continue
                if not force and now - _newest_mtime(leftover) < older_than_seconds:
                    continue
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
                removed.append(leftover)
                logger.info("removed leftover %s", leftover)
        return removed

    # ---- internals -------------------------------------------------------------------

    def _dataset_dir(self, dataset: str) -> Path:
        return self.home / check_name("dataset", dataset)

    def _version_names(self, dataset: str) -> Iterator[str]:
        dataset_dir = self._dataset_dir(dataset)
        if not dataset_dir.is_dir():
            return
        for entry in dataset_dir.iterdir():
            if entry.is_dir() and VERSION_ID.fullmatch(entry.name):
                yield entry.name

    def _keyed_frame(self, dataset: str, version: str, config: str, columns: list[str]) -> pd.DataFrame:
        frame = self.read(dataset, version, config, columns=columns).to_pandas()
        repeated = frame[columns[0]].duplicated()
        if repeated.any():
            example = frame[columns[0]][repeated].iloc[0]
            raise ValueError(f"{dataset} {version}: key {columns[0]!r} is not unique (e.g. {example!r})")
        return frame

    def _plan_files(
        self,
        configs: Mapping[str, Mapping[str, pa.Table]],
        side_tables: Mapping[str, pa.Table],
        schemas: Mapping[str, pa.Schema],
    ) -> list[tuple[str, pa.Table]]:
        """Validate names and schemas, and list (relative path, table) for every file to write."""
        if not configs:
            raise ValueError("nothing to publish: no configs")
        side_paths = {name: side_table_path(name) for name in side_tables}
        if len(set(side_paths.values())) != len(side_paths):
            raise ValueError(f"side tables {sorted(side_tables)} would share a file")
        unknown = sorted(set(schemas) - set(configs) - set(side_tables))
        if unknown:
            raise ValueError(f"schemas given for unknown configs or side tables: {unknown}")
        ambiguous = sorted(set(schemas) & set(configs) & set(side_tables))
        if ambiguous:
            raise ValueError(f"schemas for {ambiguous}: each is both a config and a side table")
        plan: list[tuple[str, pa.Table]] = []
        for config, split_tables in configs.items():
            check_name("config", config)
            if not split_tables:
                raise ValueError(f"config {config!r} has no splits")
            conformed = {
                check_name("split", split): _conform(table, schemas.get(config), f"config {config!r} split {split!r}")
                for split, table in split_tables.items()
            }
            # One config is one table to `datasets`: its splits must share a schema.
            first_split, first = next(iter(conformed.items()))
            for split, table in conformed.items():
                if not table.schema.equals(first.schema):
                    raise ValueError(
                        f"config {config!r}: split {split!r} has a different schema from split {first_split!r}"
                    )
            for split, table in conformed.items():
                plan.extend(self._shards(config, split, table))
        for name, table in side_tables.items():
            plan.append((side_paths[name], _conform(table, schemas.get(name), f"side table {name!r}")))
        return plan

    def _shards(self, config: str, split: str, table: pa.Table) -> list[tuple[str, pa.Table]]:
        count = max(1, -(-table.num_rows // self.max_rows_per_file))
        return [
            (
                f"{DATA_FOLDER}/{config}/{shard_file_name(split, index, count)}",
                table.slice(index * self.max_rows_per_file, self.max_rows_per_file),
            )
            for index in range(count)
        ]

    def _row_group_size(self, table: pa.Table) -> int:
        """Rows per row group: small enough for streaming readers by count and by bytes."""
        if table.num_rows == 0:
            return self.row_group_rows
        bytes_per_row = max(1, table.nbytes // table.num_rows)
        return max(1, min(self.row_group_rows, self.row_group_bytes // bytes_per_row))

    def _write_parquet(self, root: Path, relative: str, table: pa.Table) -> FileEntry:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as sink:
            # One chunk per column: the bytes then depend on the rows only, not on how the
            # table was assembled (a resumed build writes the same files as an uninterrupted one).
            pq.write_table(table.combine_chunks(), sink, compression="zstd", row_group_size=self._row_group_size(table))
            sink.flush()
            os.fsync(sink.fileno())
        return FileEntry(path=relative, rows=table.num_rows, bytes=path.stat().st_size, sha256=_sha256(path))

    def _set_latest(self, dataset: str, version: str) -> None:
        dataset_dir = self._dataset_dir(dataset)
        pointer = dataset_dir / f"{_LATEST_TEMP_PREFIX}{secrets.token_hex(4)}"
        _write_text_durably(pointer, version + "\n")
        os.replace(pointer, dataset_dir / LATEST_FILE)
        _fsync_dir(dataset_dir)


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    if path.is_dir():
        for entry in path.rglob("*"):
            newest = max(newest, entry.stat().st_mtime)
    return newest
