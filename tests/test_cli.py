"""The command line as a user meets it: errors in one line with an exit status, tables and
progress that read well in a log (stdout is not a terminal here), run names without paths."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import flow
from typer.testing import CliRunner

from flows import artifacts
from flows.build import run_build
from flows.cli import WithoutTraceback, app, main
from flows.console_tables import plain_table
from flows.progress import duration, log_progress, progress_line
from tasks.config import CODE_ROOT, ConfigError, DATA_DIR, config_label
from tests.conftest import write_scripted_culturax

STAGES = ("load", "classify", "dedup", "expand", "split", "respond", "publish")


class Ticks:
    """A clock that advances ten seconds per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A scripted CULTURAX build (plain Python, seconds), with the progress lines it logged."""
    files = write_scripted_culturax(tmp_path_factory.mktemp("cli"))
    home = files["root"] / "home"
    lines: list[str] = []
    with log_progress(write=lines.append, clock=Ticks()):
        result = run_build(str(files["spec"]), str(files["profile"]), home=str(home))
    return {**files, "home": home, "result": result, "lines": lines}


def run_main(arguments: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture(autouse=True)
def environment_restored(monkeypatch):
    """main() sets defaults in os.environ; keep them out of the other tests."""
    for name in ("PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(name, os.environ.get(name, "unset-by-test"))


# ----------------------------------------------------------------------------- errors


def test_a_bad_spec_prints_one_line_naming_the_file_and_field_and_exits_2(tmp_path, capsys) -> None:
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["dedup"]["tau"] = "ten"
    path = tmp_path / "culturax.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, err = run_main(["build", str(path)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("alignforge: error: ")
    assert str(path) in err and "dedup.tau" in err


@pytest.mark.parametrize("arguments, message", [
    (["build", "no_such_dataset"], "no_such_dataset.yaml does not exist"),
    (["build", "culturax", "--profile", "no_such_profile"], "no_such_profile.yaml does not exist"),
    (["plan", "no_such_dataset"], "no_such_dataset.yaml does not exist"),
])
def test_unknown_names_print_one_line_and_exit_2(arguments, message, capsys) -> None:
    code, _, err = run_main(arguments, capsys)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_export_without_a_token_prints_one_line_and_exits_2(built, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no token stored by `hf auth login`
    code, _, err = run_main(["export", "culturax", "--repo-id", "org/name", "--home", str(built["home"])], capsys)
    assert code == 2 and err == "alignforge: error: no Hugging Face token: pass token=, set HF_TOKEN, or log in " \
                                "with `hf auth login`\n"


def test_a_missing_version_prints_one_line_and_exits_2(tmp_path, capsys) -> None:
    code, _, err = run_main(["show", "culturax", "--home", str(tmp_path)], capsys)
    assert code == 2 and err == "alignforge: error: culturax: no published version\n"


def test_a_bad_source_file_fails_the_flow_in_one_line(prefect_harness, built, tmp_path, capsys) -> None:
    spec = yaml.safe_load(built["spec"].read_text())
    spec["source"].update(text_column="Prompt", sample=str(DATA_DIR / "samples" / "cultural_kaleidoscope.jsonl"))
    path = tmp_path / "culturax.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = run_main(["build", str(path), "--profile", str(built["profile"]), "--home", str(tmp_path)], capsys)
    assert code == 2
    sample = DATA_DIR / "samples" / "cultural_kaleidoscope.jsonl"
    assert err.splitlines()[-1] == f"alignforge: error: {sample}: expected a column 'Prompt'; found ['Question', 'id']"


def test_prefect_logs_errors_the_cli_explains_without_their_traceback() -> None:
    def record_of(error: Exception) -> logging.LogRecord:
        try:
            raise error
        except Exception:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed: %r", (error,),
                                     sys.exc_info())

    explained, bug = record_of(ConfigError("spec.yaml: dedup.tau: bad")), record_of(KeyError("a bug"))
    assert WithoutTraceback().filter(explained) and explained.exc_info is None
    assert WithoutTraceback().filter(bug) and bug.exc_info is not None


def test_unexpected_errors_keep_their_traceback_without_local_variables(built, tmp_path) -> None:
    home = tmp_path / "home"
    shutil.copytree(built["home"], home)
    version = json.loads((Path(built["result"]["path"]) / "manifest.json").read_text())["version"]
    (home / "culturax" / version / "manifest.json").write_text("{}")
    environment = {**os.environ, "PYTHONPATH": str(CODE_ROOT), "COLUMNS": "200"}
    shown = subprocess.run([sys.executable, "-m", "flows.cli", "show", "culturax", "--home", str(home)], cwd=tmp_path,
                           env=environment, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 1
    assert "CorruptVersionError" in shown.stderr and "Traceback" in shown.stderr
    assert "locals" not in shown.stderr  # rich would draw a "locals" panel per frame


def test_the_cli_gives_prefect_s_temporary_server_time_to_migrate_its_database(monkeypatch, capsys) -> None:
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    run_main(["--help"], capsys)
    assert int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 300
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "45")  # a user's setting is kept
    run_main(["--help"], capsys)
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "45"


# ---------------------------------------------------------------------- log-friendly output


def test_show_and_list_print_plain_tables_with_every_cell(built) -> None:
    shown = CliRunner().invoke(app, ["show", "culturax", "--home", str(built["home"])])
    assert shown.exit_code == 0, shown.output
    manifest = json.loads((Path(built["result"]["path"]) / "manifest.json").read_text())
    respond = next(s for s in manifest["stages"] if s["stage"] == "respond")
    row = next(line for line in shown.output.splitlines() if line.startswith("respond "))
    assert row.split()[:6] == ["respond", "prompt", str(respond["rows_in"]), str(respond["added"]), str(respond["kept"]),
                               str(respond["rejected"])]
    assert "scripted:" in shown.output and not set("│┃━─") & set(shown.output)
    listed = CliRunner().invoke(app, ["list", "--home", str(built["home"])])
    assert listed.exit_code == 0 and built["result"]["version"] in listed.output


def test_plan_prints_a_markdown_table_whose_stage_cells_are_filled() -> None:
    planned = CliRunner().invoke(app, ["plan", "culturax"], env={"COLUMNS": "40"})
    assert planned.exit_code == 0, planned.output
    respond = next(line for line in planned.output.splitlines() if line.startswith("| respond / generator |"))
    cells = [cell.strip() for cell in respond.strip("|").split("|")]
    assert len(cells) == 8 and all(cells[:7]), respond


def test_plain_tables_pad_columns_and_keep_long_cells_whole() -> None:
    text = plain_table(["stage", "reasons"], [["load", "empty_text=2, " * 20], ["respond", "-"]], title="stages")
    lines = text.splitlines()
    assert lines[0] == "stages" and lines[1].startswith("stage    reasons") and lines[2].startswith("-------  ----")
    assert lines[3].startswith("load     empty_text=2,") and lines[3].count("empty_text=2") == 20


# --------------------------------------------------------------------------------- progress


def test_a_build_logs_each_stage_and_each_finished_shard(built) -> None:
    lines = built["lines"]
    for stage in STAGES[1:]:
        assert any(f"] {stage:<9} started" in line for line in lines) or stage == "publish", stage
        assert any(f"] {stage:<9} " in line and "done" in line for line in lines), stage
    classify_shards = [line for line in lines if "] classify  shard" in line]
    total = int(classify_shards[0].split("/")[1].split()[0].rstrip(","))
    assert total > 1 and len(classify_shards) == total  # one line per finished shard
    assert "left in this stage" in classify_shards[0] and "stage done in" in classify_shards[-1]


def test_progress_lines_estimate_the_time_left_from_the_finished_shards() -> None:
    assert progress_line("respond", 0, 8, 5, 0) == "[         5 s] respond   started, 8 shards"
    assert progress_line("respond", 2, 8, 65, 60).endswith("shard 2/8 done, about 3 min 0 s left in this stage")
    assert progress_line("respond", 8, 8, 300, 240).endswith("shard 8/8 done, stage done in 4 min 0 s")
    assert progress_line("expand", 1, 1, 90, 42).endswith("expand    done in 42 s")
    assert duration(3725) == "1 h 02 min"


# -------------------------------------------------------------------------------- run names


def test_flow_runs_are_named_by_a_spec_file_s_stem_not_its_path(prefect_harness) -> None:
    @flow(flow_run_name=artifacts.run_name("build"))
    def named(dataset: str, profile: str = "local") -> str:
        from prefect.runtime import flow_run

        return flow_run.name

    assert named(dataset="/somewhere/deep/culturax_small.yaml", profile="/else/tiny.yaml") == "build-culturax_small-tiny"
    assert named(dataset="savacu") == "build-savacu-local"
    assert config_label("data/specs/x.yml") == "x" and config_label("culturax") == "culturax"
