"""Deployments: the schedules file validates, each deployment gets a profile that can run where
serve runs (or is refused, saying why), one run at a time, a project-relative entrypoint, and
prefect.yaml declares the same deployments."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.placement import Machine
from flows.serve import (
    ENTRYPOINTS, HEARTBEAT_SECONDS, Schedules, chosen_entries, deployment_for, load_schedules, place_all, refusals,
    serve_deployments, zombie_automation,
)
from tasks.config import ConfigError, PROJECT_ROOT
from tests.test_placement import CPU_MACHINE, GPU_MACHINE


def test_schedules_and_prefect_yaml_agree() -> None:
    schedules = load_schedules()
    declared = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]
    # prefect.yaml targets the GPU work pool: the entry's profile, else the first default (paper).
    assert {d["name"]: (d["parameters"], d["schedules"][0]["cron"], d["concurrency_limit"]) for d in declared} == {
        d.name: ({**d.parameters, "profile": d.profile or schedules.default_profiles[0]}, d.cron,
                 {"limit": 1, "collision_strategy": d.on_collision.upper()})
        for d in schedules.deployments}


def test_prefect_yaml_is_read_by_prefects_deploy_model_with_heartbeats_on() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text()))
    for deployment in model.deployments:
        assert deployment.concurrency_limit.limit == 1
        assert deployment.work_pool.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)
        assert deployment.entrypoint in ENTRYPOINTS.values()


def test_without_a_profile_a_deployment_runs_on_the_first_default_that_runs_here() -> None:
    schedules = load_schedules()
    entries = chosen_entries(schedules, ["culturax-weekly", "savacu-benchmark-weekly"])
    assert [p.profile for p in place_all(schedules, entries, CPU_MACHINE)] == ["local", "local"]
    assert [p.profile for p in place_all(schedules, entries, GPU_MACHINE)] == ["paper", "paper"]


def schedules_with(**entry) -> Schedules:
    return Schedules.model_validate({"deployments": [{"name": "savacu-weekly", "flow": "build",
                                                      "parameters": {"dataset": "savacu"}, **entry}]})


def test_a_deployment_whose_profile_cannot_run_here_is_refused_in_one_line() -> None:
    schedules = schedules_with(profile="paper")
    [line] = refusals(place_all(schedules, schedules.deployments, CPU_MACHINE))
    assert line.startswith("savacu-weekly: refused, profile paper cannot run here: ") and "vllm" in line
    assert "\n" not in line
    nothing_runs = Machine(gpus=0, importable=frozenset(), variables=frozenset())
    [line] = refusals(place_all(load_schedules(), chosen_entries(load_schedules(), ["savacu-weekly"]), nothing_runs))
    assert "profile paper cannot run here" in line and "profile local cannot run here" in line


def test_serve_refuses_before_serving_and_the_cli_exits_2(tmp_path: Path, monkeypatch) -> None:
    from flows.cli import app

    schedules_file = tmp_path / "schedules.yaml"
    schedules_file.write_text(yaml.safe_dump({"deployments": [
        {"name": "savacu-weekly", "flow": "build", "profile": "paper", "parameters": {"dataset": "savacu"}}]}))
    monkeypatch.setattr("flows.placement.PROBED_MODULES", [])  # vLLM is not installed here either: make sure
    assert serve_deployments(schedules_file=schedules_file)[0].startswith("savacu-weekly: refused, profile paper")
    result = CliRunner().invoke(app, ["serve", "--schedules", str(schedules_file)])
    assert result.exit_code == 2
    assert "savacu-weekly: refused, profile paper cannot run here" in result.output


def test_profile_belongs_in_its_own_field_and_one_build_deployment_per_dataset() -> None:
    with pytest.raises(ValueError, match="profile:"):
        schedules_with(parameters={"dataset": "savacu", "profile": "paper"})
    with pytest.raises(ValueError, match="one per dataset"):
        Schedules.model_validate({"deployments": [
            {"name": "a", "flow": "build", "parameters": {"dataset": "savacu"}},
            {"name": "b", "flow": "build", "parameters": {"dataset": "savacu"}, "profile": "local"}]})


def test_schedules_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "schedules.yaml"
    bad.write_text(yaml.safe_dump({"deployments": [{"name": "x", "flow": "build", "on_collision": "drop"}]}))
    with pytest.raises(ConfigError, match="on_collision"):
        load_schedules(bad)


def test_deployment_runs_one_at_a_time_from_a_project_relative_entrypoint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # serve started anywhere
    schedules = load_schedules()
    [placement] = place_all(schedules, chosen_entries(schedules, ["culturax-weekly"]), CPU_MACHINE)
    deployment = deployment_for(placement, schedules.timezone)
    assert deployment.name == "culturax-weekly"
    assert deployment.entrypoint == "flows/build.py:build_dataset"
    assert deployment.parameters == {"dataset": "culturax", "profile": "local"}
    assert deployment.schedules[0].schedule.cron == "0 2 * * 1"
    assert {"alignforge", "build", "culturax"} <= set(deployment.tags)
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    cancelling = schedules_with(on_collision="cancel_new")
    [placement] = place_all(cancelling, cancelling.deployments, CPU_MACHINE)
    assert deployment_for(placement, "UTC").concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_zombie_automation_crashes_our_runs_after_three_missed_heartbeats() -> None:
    automation = zombie_automation()
    trigger = automation.trigger
    assert trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.within == timedelta(seconds=3 * HEARTBEAT_SECONDS)
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match_related.get("prefect.resource.id") == ["prefect.tag.alignforge"]
    [action] = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"
