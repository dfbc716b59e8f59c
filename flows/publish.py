"""Publish: the release tables, their invariants, the manifest and an atomic version write."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flows import artifacts
from flows.build_run import BuildRun, template_hashes
from flows.progress import report as progress_report
from flows.steps import StepRunner
from schemas.manifest import ClassifierAccuracy, ExpansionOutcome, Manifest, ModelUse
from schemas.records import REJECT_SCHEMA
from tasks import __version__
from tasks.config import model_sha
from tasks.kinds import stage_two_kind
from tasks.core import concat
from tasks.dedup.near_duplicates import describe_rule
from tasks.release.card import render_card
from tasks.provenance import code_digest, git_commit
from tasks.release.invariants import check_release
from tasks.release.tables import engine_ids, with_engine_columns
from tasks.stage1.measured_accuracy import accuracy_by_dimension, engine_name, load_measurements
from tasks.stage1.sources import LoadedSource
from tasks.stage2.respond import responses_of


def publish(run: BuildRun, key: str, source: LoadedSource, prompts: pa.Table, steps: StepRunner, plan: dict[str, Any],
            started: float) -> dict[str, Any]:
    side = {name: concat(tables) for name, tables in steps.side.items()}
    if "responses" in side:
        # Candidates of prompts that left are in the rejects table; publish the kept ones.
        side["responses"] = responses_of(prompts, side["responses"])
    if "annotations" in side:
        side["annotations"] = side["annotations"].filter(pc.is_in(side["annotations"]["prompt_id"], prompts["prompt_id"]))
    kind = stage_two_kind(run.spec)
    engines = engine_ids(run.spec, run.context.profile)
    configs = {name: with_engine_columns(table, engines) for name, table in kind.release(prompts, side, run.spec).items()}
    problems = check_release(prompts, side, run.context.taxonomies, steps.reports)
    if problems:
        raise RuntimeError(f"{run.spec.name}: not published, invariants failed: " + "; ".join(problems[:10]))

    manifest = build_manifest(run, key, source, steps, started)
    manifest.plan = plan
    splits_by_config = {config: by_split(table) for config, table in configs.items()}
    side["rejects"] = concat(steps.rejects, schema=REJECT_SCHEMA)
    published = run.store.publish(run.spec.name, key, splits_by_config, side, manifest,
                                  card=lambda m: render_card(m, run.spec, run.context.taxonomies,
                                                                    task_categories=kind.task_categories))
    run.pool.release()
    steps.checkpoints.clear()
    artifacts.published(run.spec.name, published.version, Path(published.path),
                        (Path(published.path) / "README.md").read_text())
    run.context.logger.info("%s: published version %s at %s", run.spec.name, published.version, published.path)
    progress_report("publish", 1, 1)
    return {"dataset": run.spec.name, "version": published.version, "path": str(published.path), "reused": False,
            "seconds": round(time.perf_counter() - started, 1)}


def by_split(table: pa.Table) -> dict[str, pa.Table]:
    """Non-empty splits (an empty Parquet split breaks loaders); an empty table stays one empty train split."""
    if "split" not in table.column_names or table.num_rows == 0:
        return {"train": table}
    names = sorted(set(table["split"].to_pylist()))
    return {name: table.filter(pc.equal(table["split"], name)) for name in names}


def build_manifest(run: BuildRun, key: str, source: LoadedSource, steps: StepRunner, started: float) -> Manifest:
    counts = steps.label_counts
    final_stage = steps.reports[-1].stage
    domain_counts = {name: {"before": counts["classify"].get(name, {}), "after": counts["expand"].get(name, {}),
                            "published": counts[final_stage].get(name, {})}
                     for name in run.context.taxonomies}
    outcomes = steps.details.get("expand", {}).get("outcomes", [])
    return Manifest(
        dataset=run.spec.name, version="pending", content_key=key, created_at=datetime.now(timezone.utc).isoformat(),
        alignforge_version=__version__, code_sha256=code_digest(), git_commit=git_commit(), profile=run.profile_name,
        spec=run.spec.model_dump(mode="json"), source=source.fingerprint,
        taxonomies={name: model_sha(t) for name, t in run.context.taxonomies.items()},
        templates=template_hashes(), models=model_uses(run), seed=run.spec.seed, stages=steps.reports,
        expansion=[ExpansionOutcome.model_validate(o) for o in outcomes], domain_counts=domain_counts,
        leakage=steps.details.get("split", {}).get("leakage", {}),
        wall_seconds=round(time.perf_counter() - started, 2), open_choices=open_choices(run),
        classifier_accuracy=classifier_accuracy(run),
    )


def model_uses(run: BuildRun) -> list[ModelUse]:
    """One entry per engine: roles and spec models that share it (the local profile runs every
    generating role on one small model) are listed together, so its usage is counted once."""
    usage = run.usage_by_engine()
    shared: dict[str, tuple[list[str], list[str]]] = {}
    for (role, spec_model), engine in sorted(run.roles().items()):
        roles, spec_models = shared.setdefault(engine, ([], []))
        if role not in roles:
            roles.append(role)
        if spec_model not in spec_models:
            spec_models.append(spec_model)
    models = []
    for engine, (roles, spec_models) in shared.items():
        used = usage.get(engine)
        models.append(ModelUse(role=", ".join(roles), spec_model=", ".join(spec_models),
                               engine=run.context.profile.engine_for(spec_models[0]).engine_id(spec_models[0]),
                               **(used.as_dict() if used else {})))
    return models


def classifier_accuracy(run: BuildRun) -> dict[str, ClassifierAccuracy]:
    """The measured accuracy of the engine that classified, per dimension whose taxonomy it was measured on."""
    classifier = run.spec.models.classifier
    engine = engine_name(run.context.profile.engine_for(classifier), classifier)
    return accuracy_by_dimension(engine, run.context.taxonomies, load_measurements())


def open_choices(run: BuildRun) -> dict[str, str]:
    """What the papers left open, and what this build chose (written into the card)."""
    spec = run.spec
    return {
        "near_duplicates": describe_rule(spec.dedup),
        "classification": f"closed choice over the taxonomy labels; label kept when its probability >= "
                          f"{spec.classification.threshold}, otherwise Unknown; {spec.classification.max_attempts} attempts",
        "expansion_target": f"each domain topped up to {spec.expansion.target_per_domain} "
                            f"prompts in at most {spec.expansion.max_rounds} rounds, generated prompts must reclassify into their domain",
        "judge": f"scores 1-10, pass at >= {spec.responses.judge_threshold}, at most {spec.responses.feedback_iterations} "
                 f"feedback iterations",
        "splits": f"{spec.splits.fractions} stratified by {spec.splits.stratify_by or 'nothing'}, seeded hash order",
        "limit": str(run.limit),
    }
