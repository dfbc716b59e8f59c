"""Where a dataset version's files go, and the names that may appear in those paths.

Layout under the home folder::

    <home>/<dataset>/<version>/data/<config>/<split>-00000-of-00002.parquet
    <home>/<dataset>/<version>/rejects/<name>.parquet      side tables: rejected rows ...
    <home>/<dataset>/<version>/side/<name>.parquet         ... and any other table kept beside the data
    <home>/<dataset>/<version>/manifest.json
    <home>/<dataset>/<version>/README.md                   the dataset card
    <home>/<dataset>/latest                                a text file holding the newest version id

Dataset, config, split and side-table names become folder and file names, so each is
checked against a strict pattern; version ids are a UTC timestamp plus a content key's prefix.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from schemas.spec import NAME_PATTERN


# Dataset, config, split and side-table names become folder and file names: no path tricks.
VALID_NAME = re.compile(NAME_PATTERN)
_CONTENT_KEY = re.compile(r"^[0-9a-f]{10,128}$")
_CONTENT_KEY_PREFIX = 10
VERSION_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{10}$")
_VERSION_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# Rejected rows go under rejects/, every other table kept beside the data under side/.
SIDE_GROUPS = ("rejects", "side")
DATA_FOLDER = "data"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
LATEST_FILE = "latest"


def check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not VALID_NAME.fullmatch(value):
        raise ValueError(f"invalid {kind} name {value!r}: must match {NAME_PATTERN}")
    return value


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
        raise ValueError(f"invalid version id {version!r}: must look like 20261123T101500Z-3fa2c1d9e0")
    return version


def check_content_key(content_key: str) -> str:
    if not isinstance(content_key, str) or not _CONTENT_KEY.fullmatch(content_key):
        raise ValueError(f"invalid content key {content_key!r}: must be 10-128 lowercase hex digits")
    return content_key


def new_version_id(content_key: str, now: datetime | None = None) -> str:
    """UTC timestamp plus the content key's prefix: sorts by time, names what it holds."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.strftime(_VERSION_TIME_FORMAT)}-{check_content_key(content_key)[:_CONTENT_KEY_PREFIX]}"


def side_table_path(name: str) -> str:
    """A side table's name -> its file inside a version folder.

    ``rejects/<name>`` and ``side/<name>`` say where they go; a bare ``rejects`` (the
    table of every rejected row) goes to ``rejects/rejects.parquet``, any other bare name
    to ``side/<name>.parquet``.
    """
    group, slash, table = name.partition("/")
    if not slash:
        group, table = ("rejects" if name == "rejects" else "side"), name
    if group not in SIDE_GROUPS:
        raise ValueError(f"invalid side table {name!r}: name it '<name>', 'rejects/<name>' or 'side/<name>'")
    return f"{group}/{check_name('side table', table)}.parquet"


def shard_file_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"
