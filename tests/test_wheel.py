"""`pip install .` (not editable) gives a working alignforge: the wheel carries data/ and
prompts/ as the package `alignforge_data`, installs into a fresh venv, and plans and builds
from another folder with no checkout in sight.

The fresh venv sees this venv's packages (the dependencies) through a .pth line, so the test
needs no registry; alignforge itself comes from the wheel only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tasks.config import CODE_ROOT
from tests.conftest import write_scripted_culturax

NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache",
                                    ".hypothesis", "results")


def run(command: list[str], cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, cwd=cwd, env={**env, **environment}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (the build writes build/ and egg-info)."""
    copy = tmp_path_factory.mktemp("source") / "alignforge"
    shutil.copytree(CODE_ROOT, copy, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."], copy)
    [built] = (copy / "dist").glob("alignforge-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are this venv's."""
    environment = tmp_path_factory.mktemp("venv") / "fresh"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], environment)
    (Path(purelib.stdout.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], environment)
    return environment


def test_the_wheel_carries_every_file_of_data_and_prompts(wheel) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("data", "prompts"):
        files = [p for p in (CODE_ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files
        missing = [str(p.relative_to(CODE_ROOT)) for p in files
                   if f"alignforge_data/{p.relative_to(CODE_ROOT).as_posix()}" not in names]
        assert missing == []
    assert "alignforge_data/__init__.py" in names and "flows/cli.py" in names and "tasks/config.py" in names


def test_the_installed_wheel_plans_and_builds_from_another_folder(installed, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = str(tmp_path / "home")
    planned = run([str(installed / "bin" / "alignforge"), "plan", "culturax"], elsewhere, ALIGNFORGE_HOME=home)
    respond = next(line for line in planned.stdout.splitlines() if line.startswith("| respond / generator |"))
    assert all(cell.strip() for cell in respond.strip("|").split("|")[:7])

    # The packaged CULTURAX spec and sample, every role scripted: the demo's pipeline in seconds.
    profile = write_scripted_culturax(tmp_path)["profile"]
    script = ("import json, sys; from flows.build import run_build; import tasks.config as config; "
              "result = run_build('culturax', sys.argv[1]); "
              "print(json.dumps({'root': str(config.PROJECT_ROOT), 'path': result['path']}))")
    built = json.loads(run([str(installed / "bin" / "python"), "-c", script, str(profile)], elsewhere,
                           ALIGNFORGE_HOME=home).stdout.strip().splitlines()[-1])
    assert Path(built["root"]).name == "alignforge_data" and str(installed) in built["root"]
    manifest = json.loads((Path(built["path"]) / "manifest.json").read_text())
    assert manifest["source"] == {**manifest["source"], "kind": "sample",
                                  "location": "data/samples/cultural_kaleidoscope.jsonl"}
    assert manifest["splits"]["default"]["test"] > 0 and manifest["git_commit"] is None  # no checkout here
