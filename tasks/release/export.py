"""Export a published version to the Hugging Face Hub: one commit, tagged with the version id.

The whole version folder (data/, rejects/, side/, manifest.json, README.md) goes up in a
single ``create_commit``. ``upload_folder`` is not used because, with ``hf_xet``
installed, it may split a large folder over several commits, and a half-exported
version must never be visible. Files of an earlier export that this version does not
have are deleted in the same commit: the card's ``data/<config>/<split>-*.parquet`` globs
would otherwise pick up stale shards.

The token is never printed: every log record of this module and of huggingface_hub, and
every error raised from here, passes through a scrubber that replaces its value.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from schemas.manifest import Manifest
from tasks.release.layout import CARD_FILE, DATA_FOLDER, MANIFEST_FILE, SIDE_GROUPS
from tasks.release.store import DatasetStore

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # owner/name: exports never go to a bare name
_MAX_BACKOFF_SECONDS = 60.0
_REDACTED = "<hf-token>"
_T = TypeVar("_T")


class ExportError(RuntimeError):
    """An export that failed; the message has been scrubbed of the token."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class MissingTokenError(ExportError):
    """No Hugging Face token was given, set or stored."""


@dataclass(frozen=True)
class ExportResult:
    repo_id: str
    commit_sha: str
    commit_url: str
    tag: str


def check_repo_id(repo_id: str) -> str:
    """``owner/name`` as the Hub accepts it; raise ValueError naming the bad value."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"invalid repo id {repo_id!r}: {err}") from None
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"invalid repo id {repo_id!r}: expected 'owner/name'")
    return repo_id


def resolve_token(token: str | None = None) -> str:
    """The argument, else ``HF_TOKEN``, else the token stored by ``hf auth login``."""
    resolved = token or os.environ.get("HF_TOKEN") or get_token()
    if not resolved:
        raise MissingTokenError("no Hugging Face token: pass token=, set HF_TOKEN, or log in with `hf auth login`")
    return resolved


class _TokenScrubber(logging.Filter):
    """Replaces the token in log records (message and traceback) and in error texts."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, _REDACTED)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


@contextmanager
def _scrubbed_logs(secret: str) -> Iterator[_TokenScrubber]:
    # Logger filters only see records created on that very logger, so every
    # huggingface_hub logger gets the scrubber, not just the package's root one.
    scrubber = _TokenScrubber(secret)
    names = [__name__, "huggingface_hub"] + [
        name for name in list(logging.Logger.manager.loggerDict) if name.startswith("huggingface_hub.")
    ]
    loggers = [logging.getLogger(name) for name in names]
    for each in loggers:
        each.addFilter(scrubber)
    try:
        yield scrubber
    finally:
        for each in loggers:
            each.removeFilter(scrubber)


def _is_transient(error: HfHubHTTPError) -> bool:
    status = error.response.status_code
    return status == 429 or 500 <= status < 600


def _backoff_seconds(error: HfHubHTTPError, attempt: int, base_seconds: float) -> float:
    """Exponential backoff with jitter; a numeric Retry-After from the Hub wins when longer."""
    delay = base_seconds * 2**attempt * random.uniform(1.0, 1.25)
    retry_after = error.response.headers.get("Retry-After", "")
    if retry_after.isdigit():
        delay = max(delay, float(retry_after))
    return min(delay, _MAX_BACKOFF_SECONDS)


def _with_retries(
    what: str, action: Callable[[], _T], *, max_retries: int, base_seconds: float, scrubber: _TokenScrubber
) -> _T:
    """Run ``action``, retrying on HTTP 429 and 5xx only; other errors go straight up."""
    attempt = 0
    while True:
        try:
            return action()
        except HfHubHTTPError as error:
            if not _is_transient(error) or attempt >= max_retries:
                raise
            delay = _backoff_seconds(error, attempt, base_seconds)
            attempt += 1
            logger.warning(
                "%s: HTTP %d (%s); retry %d of %d in %.2f s",
                what, error.response.status_code, scrubber.scrub(error.server_message or str(error).splitlines()[0]),
                attempt, max_retries, delay,
            )
            time.sleep(delay)


def _commit_operations(
    api: HfApi, repo_id: str, folder: Path, manifest: Manifest, token: str
) -> list[CommitOperationAdd | CommitOperationDelete]:
    local = sorted([entry.path for entry in manifest.files] + [MANIFEST_FILE, CARD_FILE])
    remote = api.list_repo_files(repo_id, repo_type=REPO_TYPE, token=token)
    owned_folders = (DATA_FOLDER, *SIDE_GROUPS)
    stale = [path for path in remote if path.split("/", 1)[0] in owned_folders and path not in local]
    # Fresh operation objects per attempt: huggingface_hub marks them as used once committed.
    return [CommitOperationDelete(path_in_repo=path) for path in stale] + [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path in local
    ]


def export_version(
    store: DatasetStore,
    dataset: str,
    version: str,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    api: HfApi | None = None,
    endpoint: str | None = None,
    max_retries: int = 5,
    backoff_seconds: float = 1.0,
) -> ExportResult:
    """Upload one verified version to the dataset repo ``repo_id`` and tag the commit with the version id.

    Creates the repo when missing (``private`` applies only then). ``endpoint`` is used
    only when no ``api`` is given. Retries HTTP 429 and 5xx up to ``max_retries`` times
    with exponential backoff from ``backoff_seconds``; other errors fail at once.
    Exporting the same version again is harmless: unchanged files make no new commit and
    the existing tag is kept.
    """
    check_repo_id(repo_id)
    store.verify(dataset, version)  # never upload what does not match its manifest
    folder = store.path(dataset, version)
    manifest = store.manifest(dataset, version)
    secret = resolve_token(token)
    client = api if api is not None else HfApi(endpoint=endpoint, token=secret)
    with _scrubbed_logs(secret) as scrubber:

        def retried(what: str, action: Callable[[], _T]) -> _T:
            return _with_retries(
                what, action, max_retries=max_retries, base_seconds=backoff_seconds, scrubber=scrubber
            )

        try:
            retried(
                "create repo",
                lambda: client.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True, token=secret),
            )
            commit = retried(
                "commit",
                lambda: client.create_commit(
                    repo_id,
                    _commit_operations(client, repo_id, folder, manifest, secret),
                    commit_message=f"{dataset} {version}",
                    commit_description=f"alignforge {manifest.alignforge_version}, content key {manifest.content_key}",
                    repo_type=REPO_TYPE,
                    token=secret,
                ),
            )
            retried(
                "tag",
                lambda: client.create_tag(
                    repo_id, tag=version, revision=commit.oid, tag_message=f"{dataset} {version}",
                    repo_type=REPO_TYPE, token=secret, exist_ok=True,
                ),
            )
        except Exception as error:
            status = error.response.status_code if isinstance(error, HfHubHTTPError) else None
            # `from None`: the original exception's text is not scrubbed, so it stays out of tracebacks.
            raise ExportError(scrubber.scrub(f"export of {dataset} {version} to {repo_id} failed: {error}"),
                              status_code=status) from None
    logger.info("exported %s %s to %s at %s", dataset, version, repo_id, commit.oid)
    return ExportResult(repo_id=repo_id, commit_sha=commit.oid, commit_url=commit.commit_url, tag=version)
