"""A request cache in front of any engine: a rerun of a build pays nothing for answers it
already has. One SQLite table keyed by sha256(backend, model, revision, request); only
successful completions are stored, so a failure is retried on the next run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tasks.config import alignforge_home
from tasks.engines.base import ChatRequest, Choice, Completion, Engine


def default_cache_path() -> Path:
    return alignforge_home() / "cache" / "requests.sqlite"


def completion_to_json(completion: Completion) -> str:
    return json.dumps(dataclasses.asdict(completion), ensure_ascii=False)


def completion_from_json(text: str, *, cached: bool) -> Completion:
    data = json.loads(text)
    choices = tuple(Choice(**choice) for choice in data.pop("choices"))
    return Completion(choices=choices, **(data | {"cached": cached}))


class CachedEngine(Engine):
    """Wraps `inner`; `reuse=False` stops reads (every request goes to the model) but still
    writes, so a forced rerun refreshes the cache. Hits come back with `cached=True`."""

    def __init__(self, inner: Engine, path: Path | None = None, *, reuse: bool = True) -> None:
        super().__init__(inner.model_id, inner.revision)
        self.backend = inner.backend  # the cache is transparent: same identity as the engine it wraps
        self.inner = inner
        self.usage.load_seconds = inner.usage.load_seconds  # the model loaded when the inner engine was built
        self.reuse = reuse
        self.path = path or default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the threads of a task runner, serialised by a lock; WAL and a
        # busy timeout let other processes read and write the same file meanwhile.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS completions "
                         "(key TEXT PRIMARY KEY, completion TEXT NOT NULL, created REAL NOT NULL)")

    def key(self, request: ChatRequest) -> str:
        identity = [self.inner.backend, self.inner.model_id, self.inner.revision, request.cache_key()]
        if self.inner.cache_salt is not None:  # e.g. the embedding classifier's label texts
            identity.append(self.inner.cache_salt)
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        keys = [self.key(request) for request in requests]
        found = self._read(keys) if self.reuse else {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        fresh = dict(zip(missing, self.inner.generate([requests[i] for i in missing]), strict=True)) if missing else {}
        self._write([(keys[i], completion) for i, completion in fresh.items() if completion.ok])
        completions = [fresh[i] if i in fresh else found[key] for i, key in enumerate(keys)]
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    def _read(self, keys: list[str]) -> dict[str, Completion]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        with self._lock:
            # SQLite caps bound parameters per statement; 500 stays far below every build's limit.
            for start in range(0, len(unique), 500):
                batch = unique[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, completion FROM completions WHERE key IN ({','.join('?' * len(batch))})", batch
                ).fetchall()
                found.update((key, completion_from_json(text, cached=True)) for key, text in rows)
        return found

    def _write(self, entries: list[tuple[str, Completion]]) -> None:
        if not entries:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO completions (key, completion, created) VALUES (?, ?, ?)",
                [(key, completion_to_json(completion), now) for key, completion in entries],
            )
            self._db.execute("COMMIT")

    def close(self) -> None:
        self.inner.close()
        with self._lock:
            self._db.close()
