"""Engines by role for one build: created lazily from the profile, shared by the steps.

The pool holds configuration, not loaded models, when pickled, so a Dask worker that
receives it builds its own engines; what those engines do comes back to the build as a
`PoolUsage` with the shard's result. Models that several roles share (the local profile
maps every role to one small model) are loaded once.

GPU residency. One stage can use several GPU models (expansion: the expander, then the
classifier; MISALIGNTRADE's responses: two generators and a judge; Demo-SafetyBench: two
raters in one shard), and each vLLM engine reserves its `gpu_memory_utilization` share of the
GPU when it starts. So steps hold handles (`PooledEngine`), and a GPU model is loaded when a
batch comes for it: if the shares of the models resident with it would pass the profile's
`gpu_memory_budget`, the least recently used idle GPU models are closed first, and a batch
waits while the models it would displace are answering other threads' batches. The profile
chooses the trade: shares near the budget (the paper profile's 0.88) load the models of a
stage one phase at a time; smaller shares that fit together keep them resident (no reloads,
less KV cache each). Closing an idle model rather than splitting the budget between all the
models of a stage is what lets a 60 GB model and a 16 GB one share one 80 GB GPU in turn.
Engines off the GPU (HTTP, embeddings and transformers on CPU, scripted) hold no share: they
load when first asked for, as before, and stay until the stage releases them.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.profile import EngineConfig, Profile
from tasks.engines.base import ChatRequest, Completion, Engine, EngineUsage

SHARE_TOLERANCE = 1e-9  # three shares of 0.3 must fit a budget of 0.9 despite float sums


def add_usage(*readings: Mapping[str, EngineUsage]) -> dict[str, EngineUsage]:
    """Usage by engine name, summed over several readings."""
    total: dict[str, EngineUsage] = {}
    for reading in readings:
        for name, usage in reading.items():
            total[name] = total.get(name, EngineUsage()) + usage
    return total


def gpu_share(config: EngineConfig) -> float:
    """The fraction of GPU memory an engine reserves while loaded: vLLM's gpu_memory_utilization;
    a transformers or embedding model placed on CUDA counts the same field as its share."""
    on_gpu = config.backend == "vllm" or (config.backend in ("transformers", "embedding")
                                          and config.device.startswith("cuda"))
    return config.gpu_memory_utilization if on_gpu else 0.0


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


@dataclass
class _Slot:
    """One engine the pool may hold: how to build it, its GPU share, and its state."""

    name: str  # backend:model, as usage and manifests name it
    config: EngineConfig
    spec_model: str
    share: float
    engine: Engine | None = None
    loading: bool = False
    busy: int = 0  # batches running on it now
    last_used: int = 0


class PooledEngine(Engine):
    """What a step gets from the pool: an engine whose model the pool may load and close
    between batches. Usage and identity are the pool's record of the model behind it."""

    def __init__(self, pool: EnginePool, slot: _Slot) -> None:
        # Engine.__init__ is skipped on purpose: usage and revision are read from the pool.
        self._pool = pool
        self._slot = slot
        self.backend = slot.config.backend
        self.model_id = slot.config.resolved_model(slot.spec_model)

    @property
    def revision(self) -> str | None:  # type: ignore[override]
        engine = self._slot.engine
        return engine.revision if engine is not None else self._slot.config.revision

    @property
    def usage(self) -> EngineUsage:  # type: ignore[override]
        return self._pool.usage_by_engine().get(self._slot.name, EngineUsage())

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        engine = self._pool._lease(self._slot)
        try:
            return engine.generate(requests)
        finally:
            self._pool._give_back(self._slot)


class EnginePool:
    def __init__(self, profile: Profile, *, cache_path: Path | None, reuse_cache: bool = True,
                 label_descriptions: Mapping[str, str | Sequence[str]] | None = None) -> None:
        self.profile = profile
        self.cache_path = cache_path
        self.reuse_cache = reuse_cache
        self.label_descriptions = label_descriptions or {}
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._roles: dict[tuple[str, str], str] = {}  # (role, spec model) -> engine name
        self._retired: dict[str, EngineUsage] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clock = itertools.count(1)
        self.pool_id = uuid.uuid4().hex
        self.is_copy = False

    def __call__(self, role: str, model_id: str) -> Engine:
        config = self.profile.engine_for(model_id)
        key = (config.model_dump_json(), config.resolved_model(model_id))
        name = f"{config.backend}:{config.resolved_model(model_id)}"
        share = gpu_share(config)
        if share > self.profile.gpu_memory_budget + SHARE_TOLERANCE:
            raise ValueError(f"{name} reserves gpu_memory_utilization {share}, more than the profile's "
                             f"gpu_memory_budget {self.profile.gpu_memory_budget}")
        with self._lock:
            self._roles[(role, model_id)] = name
            slot = self._slots.setdefault(key, _Slot(name, config, model_id, share))
        if share == 0:  # off the GPU: load now, as a step asking for its model expects
            self._lease(slot)
            self._give_back(slot)
        return PooledEngine(self, slot)

    def _create(self, config: EngineConfig, model_id: str) -> Engine:
        from tasks.engines import create_engine

        return create_engine(config, model_id, cache_path=self.cache_path, reuse_cache=self.reuse_cache,
                             label_descriptions=self.label_descriptions)

    # -- residency ---------------------------------------------------------------------------

    def _lease(self, slot: _Slot) -> Engine:
        """The slot's loaded engine, marked busy; loads it first, closing idle GPU models that
        would push the resident shares past the budget, or waits until it can."""
        with self._changed:
            while True:
                if slot.engine is not None:
                    slot.busy += 1
                    slot.last_used = next(self._clock)
                    return slot.engine
                displaced = None if slot.loading else self._displaced_by(slot)
                if displaced is not None:
                    break
                self._changed.wait()  # another thread is loading it, or the models in the way are busy
            for other in displaced:
                self._close(other)
            slot.loading = True
        try:
            engine = self._create(slot.config, slot.spec_model)  # outside the lock: loads take minutes
        except BaseException:
            with self._changed:
                slot.loading = False
                self._changed.notify_all()
            raise
        with self._changed:
            slot.engine, slot.loading = engine, False
            slot.busy += 1
            slot.last_used = next(self._clock)
            self._changed.notify_all()
        return engine

    def _give_back(self, slot: _Slot) -> None:
        with self._changed:
            slot.busy -= 1
            self._changed.notify_all()

    def _displaced_by(self, slot: _Slot) -> list[_Slot] | None:
        """The idle GPU models to close, least recently used first, so that `slot` fits the
        budget; None when it cannot fit until busy or loading models are done."""
        held = sum(s.share for s in self._slots.values() if s.engine is not None or s.loading)
        excess = held + slot.share - self.profile.gpu_memory_budget
        idle = sorted((s for s in self._slots.values() if s.engine is not None and s.busy == 0 and s.share > 0),
                      key=lambda s: s.last_used)
        displaced = []
        for candidate in idle:
            if excess <= SHARE_TOLERANCE:
                break
            displaced.append(candidate)
            excess -= candidate.share
        return displaced if excess <= SHARE_TOLERANCE else None

    def _close(self, slot: _Slot) -> None:
        """Close a loaded engine and keep its usage (caller holds the lock)."""
        engine = slot.engine
        if engine is None:
            return
        self._retired[slot.name] = self._retired.get(slot.name, EngineUsage()) + engine.usage
        slot.engine = None
        engine.close()

    def release(self) -> None:
        """Close every loaded engine (frees GPU memory before the next stage's models load),
        once the batches running on them are done."""
        with self._changed:
            while any(slot.busy or slot.loading for slot in self._slots.values()):
                self._changed.wait()
            for slot in self._slots.values():
                self._close(slot)
            self._changed.notify_all()

    def resident(self) -> list[str]:
        """Names of the engines loaded now."""
        with self._lock:
            return [slot.name for slot in self._slots.values() if slot.engine is not None]

    @property
    def releases_between_stages(self) -> bool:
        """GPU backends hand memory back between stages; CPU models stay loaded."""
        configs = [*self.profile.models.values(), *([self.profile.default_engine] if self.profile.default_engine else [])]
        return any(gpu_share(c) > 0 for c in configs)

    # -- usage -------------------------------------------------------------------------------

    def usage_by_engine(self) -> dict[str, EngineUsage]:
        with self._lock:
            live = [{slot.name: slot.engine.usage} for slot in self._slots.values() if slot.engine is not None]
            return add_usage(self._retired, *live)

    def usage_since(self, before: Mapping[str, EngineUsage]) -> PoolUsage:
        """This pool's usage since the `before` reading of `usage_by_engine()`."""
        since = {name: usage - before.get(name, EngineUsage()) for name, usage in self.usage_by_engine().items()}
        return PoolUsage(self.pool_id, since, self.roles())

    def roles(self) -> dict[tuple[str, str], str]:
        return dict(self._roles)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_slots={}, _retired={}, _lock=None, _changed=None, _clock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._clock = itertools.count(1)
        self.pool_id = uuid.uuid4().hex  # a copy (a Dask worker's) counts calls the original never sees
        self.is_copy = True
