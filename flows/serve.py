"""Deployments with schedules, served from this process (`alignforge serve`): no work pool
is needed on a single machine. The same deployments are declared in prefect.yaml for
`prefect deploy` against a work pool.

What serve guarantees (README, "Operations"):
- each deployment runs on a profile that can run here (`flows.placement`), or serve refuses it;
- at most one run per deployment at a time (a deployment concurrency limit of 1; the schedules
  allow one build deployment per dataset, so this is one build per dataset), a second waits
  (`AwaitingConcurrencySlot`) or is cancelled, as the entry says;
- flow runs send heartbeats, and a server automation marks a run that stops sending them Crashed;
- ending serve ends its flow runs, and a guardian process ends them if serve is killed outright.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.placement import Machine, local_source_path, models_of, probe_machine, profile_runs_here
from schemas.profile import Profile
from schemas.spec import DatasetSpec
from tasks.config import DATA_DIR, PROJECT_ROOT, load_profile, load_spec, read_yaml_model

# Flow files relative to the project root, as prefect.yaml names them; serve runs flows from there.
ENTRYPOINTS = {"build": "flows/build.py:build_dataset", "benchmark": "flows/benchmark.py:benchmark"}
# Prefect's minimum heartbeat interval; a run is a zombie after three heartbeats missed in a row.
HEARTBEAT_SECONDS = 30
ZOMBIE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)
ZOMBIE_AUTOMATION = "alignforge: mark runs without heartbeats Crashed"
RUN_TAG = "alignforge"


class ScheduledDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    flow: Literal["build", "benchmark"]
    cron: str | None = None
    # None: the first of the file's `default_profiles` that can run where serve runs.
    profile: str | None = None
    parameters: dict[str, Any] = {}
    tags: list[str] = []
    # A trigger while a run is under way: wait for it (enqueue) or be cancelled (cancel_new).
    on_collision: Literal["enqueue", "cancel_new"] = "enqueue"

    @field_validator("parameters")
    @classmethod
    def _profile_is_its_own_field(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if "profile" in parameters:
            raise ValueError("set the profile with the entry's `profile:` field, not in parameters")
        return parameters

    @property
    def dataset(self) -> str:
        return str(self.parameters.get("dataset", ""))


class Schedules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    default_profiles: list[str] = ["paper", "local"]
    deployments: list[ScheduledDeployment]

    @model_validator(mode="after")
    def _one_build_deployment_per_dataset(self) -> Schedules:
        # A deployment's concurrency limit then is its dataset's: two builds of one dataset never overlap.
        builds = [d.dataset for d in self.deployments if d.flow == "build"]
        repeated = sorted({dataset for dataset in builds if builds.count(dataset) > 1})
        if repeated:
            raise ValueError(f"more than one build deployment for {repeated}: one per dataset")
        return self


def load_schedules(path: Path | None = None) -> Schedules:
    return read_yaml_model(path or DATA_DIR / "schedules.yaml", Schedules)


def chosen_entries(schedules: Schedules, only: list[str] | None) -> list[ScheduledDeployment]:
    unknown = set(only or []) - {d.name for d in schedules.deployments}
    if unknown:
        raise ValueError(f"no deployments named {sorted(unknown)} in the schedules file")
    return [d for d in schedules.deployments if not only or d.name in only]


@dataclass(frozen=True)
class Placement:
    """The profile a deployment runs on here (as `load_profile` takes it), or None and why not."""

    entry: ScheduledDeployment
    profile: str | None
    reason: str


def place(entry: ScheduledDeployment, candidates: list[tuple[str, Profile]], spec: DatasetSpec,
          machine: Machine) -> Placement:
    """The first candidate profile that can run `entry` on `machine` (candidates: the entry's own
    profile, or the schedules' defaults in order)."""
    if entry.flow == "build":
        models, source = models_of(spec), spec.source
    else:  # a benchmark asks for the models under test and the spec's judge; it reads a built version
        models, source = [*entry.parameters.get("models", []), *([spec.models.judge] if spec.models.judge else [])], None
    reasons = []
    for reference, profile in candidates:
        runs, reason = profile_runs_here(profile, machine, models, source)
        if runs:
            return Placement(entry, reference, reason)
        reasons.append(reason)
    return Placement(entry, None, "; ".join(reasons))


def place_all(schedules: Schedules, entries: list[ScheduledDeployment], machine: Machine | None = None) -> list[Placement]:
    specs = {entry.name: load_spec(entry.dataset) for entry in entries}
    if machine is None:
        paths = [local_source_path(spec.source) for spec in specs.values()]
        machine = probe_machine([p for p in paths if p])
    placements = []
    for entry in entries:
        references = [entry.profile] if entry.profile else schedules.default_profiles
        candidates = [(reference, load_profile(reference)) for reference in references]
        placements.append(place(entry, candidates, specs[entry.name], machine))
    return placements


def flow_for(kind: str):
    if kind == "build":
        from flows.build import build_dataset

        return build_dataset
    from flows.benchmark import benchmark

    return benchmark


def deployment_for(placement: Placement, timezone: str, with_schedule: bool = True):
    """The Prefect deployment of a placed entry; parameters are validated against the flow's
    signature by Prefect when a run is created."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    entry = placement.entry
    if placement.profile is None:
        raise ValueError(f"{entry.name}: {placement.reason}")
    schedule = [Cron(entry.cron, timezone=timezone)] if entry.cron and with_schedule else None
    tags = [t for t in [RUN_TAG, entry.flow, entry.dataset, *entry.tags] if t]
    deployment = flow_for(entry.flow).to_deployment(
        name=entry.name, parameters={**entry.parameters, "profile": placement.profile}, schedules=schedule, tags=tags,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy(entry.on_collision.upper())))
    # Prefect names the flow file relative to the folder serve started in; name it relative to
    # the project instead (serve runs flows from the project root), as prefect.yaml does.
    deployment.entrypoint = ENTRYPOINTS[entry.flow]
    return deployment


def zombie_automation():
    """Marks a run Crashed when `ZOMBIE_AFTER` passes after a heartbeat with neither another
    heartbeat nor a final state (Prefect's "Detect zombie flows" recipe, limited to our runs)."""
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"Flow runs tagged {RUN_TAG!r} send a heartbeat every {HEARTBEAT_SECONDS} s (alignforge serve); "
                    f"one silent for {int(ZOMBIE_AFTER.total_seconds())} s lost its process.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "tag",
                                                 "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1, within=ZOMBIE_AFTER),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"No heartbeat for {int(ZOMBIE_AFTER.total_seconds())} s: its process is gone.")],
    )


def ensure_zombie_automation() -> str:
    """Create the zombie automation on the server, or bring the existing one up to date; its id."""
    from prefect.client.orchestration import get_client

    wanted = zombie_automation()
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if not existing:
            return str(client.create_automation(wanted))
        client.update_automation(existing[0].id, wanted)
        for duplicate in existing[1:]:  # left by serves that raced to create it
            client.delete_automation(duplicate.id)
        return str(existing[0].id)


def refusals(placements: list[Placement]) -> list[str]:
    return [f"{p.entry.name}: refused, {p.reason}" for p in placements if p.profile is None]


def serve_deployments(only: list[str] | None = None, schedules_file: Path | None = None, paused: bool = False) -> list[str]:
    """Serve until stopped; returns the refusals (one line each) instead when a deployment's
    profile cannot run here. Ends every process its flow runs started before it returns."""
    from prefect.runner import Runner

    from flows.guardian import descendants, end_processes

    schedules = load_schedules(schedules_file.resolve() if schedules_file else None)
    placements = place_all(schedules, chosen_entries(schedules, only))
    refused = refusals(placements)
    if refused:
        return refused
    runner = Runner(heartbeat_seconds=HEARTBEAT_SECONDS)
    for placement in placements:
        runner.add_deployment(deployment_for(placement, schedules.timezone, with_schedule=not paused))
        print(f"serving {placement.entry.name} on profile {placement.profile}", flush=True)
    ensure_zombie_automation()
    # Flow runs start in serve's working folder, where the project-relative entrypoints resolve.
    os.chdir(PROJECT_ROOT)
    guardian = subprocess.Popen([sys.executable, "-m", "flows.guardian", str(os.getpid())],
                                cwd=PROJECT_ROOT, start_new_session=True)
    # Ctrl-C stops like SIGTERM (the runner installs that handler itself): runs are cancelled
    # through Prefect, rather than cut off by a KeyboardInterrupt before they can report.
    signal.signal(signal.SIGINT, runner.handle_sigterm)
    try:
        asyncio.run(runner.start())
    finally:
        end_processes([p for p in descendants(os.getpid()) if p.pid != guardian.pid])
        guardian.terminate()
        guardian.wait()
    return []
