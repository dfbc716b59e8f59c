"""One build's resolved inputs: spec, profile, taxonomies, templates, engines, budget.

Resolved once, before any step runs; their digest (`content_key`) names the version, so
unchanged inputs find the version already published.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from schemas.manifest import SourceFingerprint
from schemas.spec import DatasetSpec
from schemas.taxonomy import all_label_texts
from tasks.config import (
    PROMPTS_DIR, alignforge_home, apply_profile, load_profile, load_spec, model_sha, taxonomies_for, with_source_encoding,
)
from tasks.core import StepContext
from tasks.engines.base import EngineUsage
from tasks.kinds import stage_two_kind
from tasks.engines.pool import EnginePool, PoolUsage, add_usage
from tasks.planning.budget import Budget, estimate_shard, spend_between
from tasks.prompts import PromptLibrary
from tasks.provenance import code_digest
from tasks.release.checkpoint import ShardCheckpoints
from tasks.release.store import DatasetStore


@dataclass
class BuildRun:
    """Everything one build reads, resolved once: the inputs that define its version."""

    spec_name: str
    profile_name: str
    limit: int | None
    reuse_cache: bool
    home: Path
    context: StepContext
    pool: EnginePool
    budget: Budget = field(default_factory=Budget)
    start_usage: dict[str, EngineUsage] = field(default_factory=dict)
    # Usage of shards that ran on other processes' pools (Dask workers): ours never sees it.
    elsewhere_usage: dict[str, EngineUsage] = field(default_factory=dict)
    elsewhere_roles: dict[tuple[str, str], str] = field(default_factory=dict)
    source_location: str | None = None  # `--source`: the user's copy instead of the spec's source

    def count_shard_usage(self, shard_usage: PoolUsage | None) -> None:
        if shard_usage is None or shard_usage.pool_id == self.pool.pool_id:
            return  # already counted by our own pool
        self.elsewhere_usage = add_usage(self.elsewhere_usage, shard_usage.usage)
        self.elsewhere_roles.update(shard_usage.roles)

    def usage_by_engine(self) -> dict[str, EngineUsage]:
        return add_usage(self.pool.usage_by_engine(), self.elsewhere_usage)

    def roles(self) -> dict[tuple[str, str], str]:
        return {**self.elsewhere_roles, **self.pool.roles()}

    def check_budget(self, stage: str, rows: pa.Table, where: str) -> None:
        """Stop before work whose upper-bound estimate could take the build past its budget."""
        if self.budget == Budget():
            return
        spent = spend_between(self.start_usage, self.usage_by_engine(), self.roles(), self.context.profile)
        self.budget.check(spent, estimate_shard(stage, rows, self.spec, self.context.profile), where)

    @classmethod
    def prepare(cls, dataset: str, profile: str, limit: int | None, reuse_cache: bool, home: Path | None = None,
                encoding: str | None = None) -> BuildRun:
        profile_model = load_profile(profile)
        spec = with_source_encoding(apply_profile(load_spec(dataset), profile_model), encoding)
        stage_two_kind(spec)  # an unknown kind, or one without its models, fails before any step runs
        taxonomies = taxonomies_for(spec)
        home = home or alignforge_home()
        pool = EnginePool(profile_model, cache_path=home / "cache" / "requests.sqlite", reuse_cache=reuse_cache,
                          label_descriptions=all_label_texts(taxonomies.values()))
        context = StepContext(spec=spec, profile=profile_model, taxonomies=taxonomies,
                              prompts=PromptLibrary(PROMPTS_DIR), engines=pool, logger=_logger())
        effective_limit = limit if limit is not None else profile_model.limit
        return cls(dataset, profile, effective_limit, reuse_cache, home, context, pool)

    @property
    def spec(self) -> DatasetSpec:
        return self.context.spec

    @property
    def store(self) -> DatasetStore:
        return DatasetStore(self.home)

    def checkpoints(self, key: str) -> ShardCheckpoints:
        return ShardCheckpoints(self.home / self.spec.name / ".work" / key[:16])

    def content_key(self, source: SourceFingerprint) -> str:
        """Digest of every input that determines the result: same inputs, same version."""
        parts = {
            "spec": model_sha(self.spec), "profile": model_sha(self.context.profile), "limit": self.limit,
            "taxonomies": {name: model_sha(t) for name, t in self.context.taxonomies.items()},
            "templates": template_hashes(), "source": source.sha256, "code": code_digest(),
        }
        return hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()


def template_hashes() -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(PROMPTS_DIR.glob("*.yaml"))}


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("alignforge")
