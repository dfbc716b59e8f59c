"""Engines by role for one build: created lazily from the profile, shared by the steps.

The pool holds configuration, not loaded models, when pickled, so a Dask worker that
receives it builds its own engines; what those engines do comes back to the build as a
`PoolUsage` with the shard's result. Models that several roles share (the local profile
maps every role to one small model) are loaded once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.profile import EngineConfig, Profile
from tasks.engines.base import Engine, EngineUsage


def add_usage(*readings: Mapping[str, EngineUsage]) -> dict[str, EngineUsage]:
    """Usage by engine name, summed over several readings."""
    total: dict[str, EngineUsage] = {}
    for reading in readings:
        for name, usage in reading.items():
            total[name] = total.get(name, EngineUsage()) + usage
    return total


@dataclass(frozen=True)
class PoolUsage:
    """What one pool's engines did between two readings, and which engine served each
    (role, spec model); `pool_id` tells the build whether that pool is its own."""

    pool_id: str
    usage: dict[str, EngineUsage] = field(default_factory=dict)
    roles: dict[tuple[str, str], str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pool_id": self.pool_id, "usage": {name: asdict(used) for name, used in self.usage.items()},
                "roles": [[role, spec_model, engine] for (role, spec_model), engine in self.roles.items()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolUsage:
        return cls(data["pool_id"], {name: EngineUsage(**used) for name, used in data["usage"].items()},
                   {(role, spec_model): engine for role, spec_model, engine in data["roles"]})


class EnginePool:
    def __init__(self, profile: Profile, *, cache_path: Path | None, reuse_cache: bool = True,
                 label_descriptions: dict[str, str] | None = None) -> None:
        self.profile = profile
        self.cache_path = cache_path
        self.reuse_cache = reuse_cache
        self.label_descriptions = label_descriptions or {}
        self._engines: dict[tuple[str, str], Engine] = {}
        self._roles: dict[tuple[str, str], str] = {}  # (role, spec model) -> engine key
        self._retired: dict[str, EngineUsage] = {}
        self._lock = threading.Lock()
        self.pool_id = uuid.uuid4().hex
        self.is_copy = False

    def __call__(self, role: str, model_id: str) -> Engine:
        config = self.profile.engine_for(model_id)
        key = (config.model_dump_json(), config.resolved_model(model_id))
        with self._lock:
            self._roles[(role, model_id)] = self._key_name(config, model_id)
            if key not in self._engines:
                self._engines[key] = self._create(config, model_id)
            return self._engines[key]

    def _create(self, config: EngineConfig, model_id: str) -> Engine:
        from tasks.engines import create_engine

        return create_engine(config, model_id, cache_path=self.cache_path, reuse_cache=self.reuse_cache,
                             label_descriptions=self.label_descriptions)

    @staticmethod
    def _key_name(config: EngineConfig, model_id: str) -> str:
        return f"{config.backend}:{config.resolved_model(model_id)}"

    def release(self) -> None:
        """Close every loaded engine (frees GPU memory before the next stage's models load)."""
        with self._lock:
            for engine in self._engines.values():
                name = f"{engine.backend}:{engine.model_id}"
                self._retired[name] = self._retired.get(name, EngineUsage()) + engine.usage
                engine.close()
            self._engines.clear()

    @property
    def releases_between_stages(self) -> bool:
        """GPU backends hand memory back between stages; CPU models stay loaded."""
        configs = [*self.profile.models.values(), *([self.profile.default_engine] if self.profile.default_engine else [])]
        return any(c.backend == "vllm" or c.device.startswith("cuda") for c in configs)

    def usage_by_engine(self) -> dict[str, EngineUsage]:
        with self._lock:
            return add_usage(self._retired, *({f"{e.backend}:{e.model_id}": e.usage} for e in self._engines.values()))

    def usage_since(self, before: Mapping[str, EngineUsage]) -> PoolUsage:
        """This pool's usage since the `before` reading of `usage_by_engine()`."""
        since = {name: usage - before.get(name, EngineUsage()) for name, usage in self.usage_by_engine().items()}
        return PoolUsage(self.pool_id, since, self.roles())

    def roles(self) -> dict[tuple[str, str], str]:
        return dict(self._roles)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_engines={}, _retired={}, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.pool_id = uuid.uuid4().hex  # a copy (a Dask worker's) counts calls the original never sees
        self.is_copy = True
