"""Reading a version back with every check: a version folder must hold exactly what its
manifest lists (sizes, checksums, row counts), and no manifest path may leave the folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from schemas.manifest import FileEntry, Manifest
from tasks.release.layout import CARD_FILE, DATA_FOLDER, MANIFEST_FILE, SIDE_GROUPS


class CorruptVersionError(RuntimeError):
    """A version folder whose manifest, files or checksums do not agree."""


def _where(root: Path) -> str:
    return f"{root.parent.name}/{root.name}"


def _inside(root: Path, relative: str) -> Path:
    """Resolve a manifest path, refusing anything that would leave the version folder."""
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise CorruptVersionError(f"{_where(root)}: manifest lists an unsafe path {relative!r}")
    return root.joinpath(*pure.parts)


def read_verified(root: Path, entry: FileEntry, columns: list[str] | None = None) -> pa.Table:
    """Read one file after checking its size, checksum and row count against the manifest."""
    path = _inside(root, entry.path)
    if not path.is_file():
        raise CorruptVersionError(f"{_where(root)}: {entry.path} is missing")
    payload = path.read_bytes()
    if len(payload) != entry.bytes:
        raise CorruptVersionError(f"{_where(root)}: {entry.path} has {len(payload)} bytes, manifest says {entry.bytes}")
    checksum = hashlib.sha256(payload).hexdigest()
    if checksum != entry.sha256:
        raise CorruptVersionError(f"{_where(root)}: {entry.path} checksum {checksum} does not match the manifest")
    try:
        table = pq.read_table(pa.BufferReader(payload), columns=columns)
    except pa.ArrowException as err:
        raise CorruptVersionError(f"{_where(root)}: {entry.path} is not readable Parquet: {err}") from err
    if table.num_rows != entry.rows:
        raise CorruptVersionError(f"{_where(root)}: {entry.path} has {table.num_rows} rows, manifest says {entry.rows}")
    return table


def load_manifest(root: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((root / MANIFEST_FILE).read_bytes())
    except FileNotFoundError as err:
        raise CorruptVersionError(f"{_where(root)}: no {MANIFEST_FILE}") from err
    except ValidationError as err:
        raise CorruptVersionError(f"{_where(root)}: {MANIFEST_FILE} is not a valid manifest: {err}") from err


def _files_under_owned_folders(root: Path) -> set[str]:
    folders = [root / DATA_FOLDER, *(root / group for group in SIDE_GROUPS)]
    return {path.relative_to(root).as_posix() for folder in folders for path in folder.rglob("*") if path.is_file()}


def verify_folder(root: Path, manifest: Manifest, expected_version: str, *, read_data: bool) -> None:
    """Check that a version folder holds exactly what its manifest says.

    Always: the manifest names this version, every listed file exists with its size, no
    unlisted file sits under data/ (a stray shard would be picked up by the card's globs),
    and the per-split row counts add up. With ``read_data``: every file's sha256 and row
    count too, and every file decodes.
    """
    if manifest.version != expected_version:
        raise CorruptVersionError(f"{_where(root)}: manifest names version {manifest.version!r}")
    if not (root / CARD_FILE).is_file():
        raise CorruptVersionError(f"{_where(root)}: no {CARD_FILE}")
    listed = {entry.path for entry in manifest.files}
    unlisted = sorted(_files_under_owned_folders(root) - listed)
    if unlisted:
        raise CorruptVersionError(f"{_where(root)}: files not in the manifest: {unlisted}")
    split_rows: dict[tuple[str, str], int] = {}
    for entry in manifest.files:
        path = _inside(root, entry.path)
        if read_data:
            read_verified(root, entry)
        elif not path.is_file() or path.stat().st_size != entry.bytes:
            raise CorruptVersionError(f"{_where(root)}: {entry.path} is missing or has the wrong size")
        parts = PurePosixPath(entry.path).parts
        if parts[0] == DATA_FOLDER:
            split = parts[-1].split("-", 1)[0]
            split_rows[(parts[1], split)] = split_rows.get((parts[1], split), 0) + entry.rows
    declared = {(config, split): rows for config, splits in manifest.splits.items() for split, rows in splits.items()}
    if split_rows != declared:
        raise CorruptVersionError(f"{_where(root)}: files hold {split_rows} rows per split, manifest says {declared}")
