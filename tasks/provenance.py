"""Which code built a version: a digest of the source that shapes the data, and the git commit.

`__version__` changes by hand and rarely; the digest changes with every edit, so a version key
that holds it never returns a version made by other code, and shard checkpoints of other code
are never resumed.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

from tasks.config import CODE_ROOT

# The packages whose source decides what a build writes (templates are hashed on their own).
DATA_SHAPING_PACKAGES = ("schemas", "tasks", "flows")


def source_digest(root: Path, packages: tuple[str, ...] = DATA_SHAPING_PACKAGES) -> str:
    """sha256 over the relative path and bytes of every .py file of `packages` under `root`."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """The digest of the code this process runs (computed once: the code does not change under it)."""
    return source_digest(CODE_ROOT)


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout this code runs from, marked when the data-shaping code has
    uncommitted changes; None for an installed package or without git."""
    if not (CODE_ROOT / ".git").exists():
        return None
    try:
        commit = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--", *DATA_SHAPING_PACKAGES, "prompts", "data")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (with uncommitted changes)" if changed else commit


def _git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(CODE_ROOT), *arguments], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
