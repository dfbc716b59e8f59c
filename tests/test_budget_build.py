"""A budget stops a build at a shard boundary, publishes nothing, and the build resumed with a
larger budget equals an unbudgeted one."""

from __future__ import annotations

import json
from pathlib import Path

from flows.build import run_build
from tasks.planning.budget import Budget
from tests.conftest import write_scripted_culturax


def files_of(result: dict) -> dict[str, str]:
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    return {entry["path"]: entry["sha256"] for entry in manifest["files"]}


def test_budget_stop_then_resume_equals_unbudgeted_build(tmp_path: Path) -> None:
    files = write_scripted_culturax(tmp_path)
    spec, profile = str(files["spec"]), str(files["profile"])
    reference = run_build(spec, profile, home=str(tmp_path / "reference"))

    home = tmp_path / "budgeted"
    stopped = run_build(spec, profile, home=str(home), budget=Budget(max_requests=40))
    assert stopped["version"] is None and "budget stop before" in stopped["stopped"]
    assert stopped["spent"]["requests"] <= 40
    assert not [p for p in (home / "culturax").iterdir() if not p.name.startswith(".")]
    finished_before = len(list(home.glob("culturax/.work/*/*/shard-*/report.json")))
    assert finished_before > 0  # the shards paid for are kept for the next run

    resumed = run_build(spec, profile, home=str(home), budget=Budget(max_requests=100_000))
    assert resumed["version"] is not None
    assert files_of(resumed) == files_of(reference)


def test_manifest_keeps_the_plan_and_show_prints_plan_against_actual(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    files = write_scripted_culturax(tmp_path)
    result = run_build(str(files["spec"]), str(files["profile"]), home=str(tmp_path / "home"))
    manifest = json.loads((Path(result["path"]) / "manifest.json").read_text())
    actual_requests = sum(model["requests"] for model in manifest["models"])
    low, high = manifest["plan"]["requests"]
    assert low <= actual_requests <= high
    shown = CliRunner().invoke(app, ["show", "culturax", "--home", str(tmp_path / "home")], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "plan vs actual" in shown.output and f"{actual_requests:,}" in shown.output
