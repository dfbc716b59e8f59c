"""One build per dataset at a time, outside Prefect too: the work folder's lock, tested with
real concurrent build processes; and temporary files that are unique per writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.config import PROJECT_ROOT
from tests.engines.openai_server import ServerFaults, running_server
from tasks.release.checkpoint import LOCK_FILE, BuildInProgress, ShardCheckpoints, work_folder_lock
from tasks.release.store import DatasetStore
from tests.conftest import write_scripted_culturax
from tests.test_secrets import scripted_server_engine

BUILD = """
import json, sys
from flows.build import run_build
result = run_build(sys.argv[1], sys.argv[2], home=sys.argv[3])
print(json.dumps({"version": result["version"], "reused": result["reused"]}))
"""
HOLD_LOCK = """
import sys, time
from pathlib import Path
from tasks.release.checkpoint import work_folder_lock
with work_folder_lock(Path(sys.argv[1]), wait_seconds=0):
    print("holding", flush=True)
    time.sleep(600)
"""


def python(script: str, *args: str, **environment: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **environment},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_the_lock_is_exclusive_names_its_holder_and_is_released(tmp_path: Path) -> None:
    folder = tmp_path / "savacu" / ".work"
    with work_folder_lock(folder, wait_seconds=0):
        holder = json.loads((folder / LOCK_FILE).read_text())
        assert holder["pid"] == str(os.getpid())
        started = time.monotonic()
        with pytest.raises(BuildInProgress, match=rf"savacu: another build .*pid {os.getpid()} on "):
            with work_folder_lock(folder, wait_seconds=0.5):
                pass
        assert time.monotonic() - started >= 0.5  # it waited as long as it was told
    with work_folder_lock(folder, wait_seconds=0):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    folder = tmp_path / "savacu" / ".work"
    holder = python(HOLD_LOCK, str(folder))
    assert holder.stdout.readline().strip() == "holding"
    with pytest.raises(BuildInProgress):
        with work_folder_lock(folder, wait_seconds=0):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with work_folder_lock(folder, wait_seconds=0):
        pass


def test_concurrent_builds_of_one_dataset_publish_one_version(tmp_path: Path) -> None:
    """Three real build processes of one dataset: the first builds, one told to wait long
    enough reuses its version, one told to wait 1 s fails naming the first."""
    home = tmp_path / "home"
    lock = home / "culturax" / ".work" / LOCK_FILE
    # Each engine request waits, so the first build holds its lock for several seconds.
    with running_server(scripted_server_engine(), faults=ServerFaults(delay_s=0.1)) as base_url:
        files = write_scripted_culturax(tmp_path, engine={"backend": "openai", "base_url": base_url, "max_retries": 0})
        args = (str(files["spec"]), str(files["profile"]), str(home))
        first = python(BUILD, *args)
        wait_for(lambda: lock.is_file() and str(first.pid) in lock.read_text(), 120, "the first build's lock")
        patient = python(BUILD, *args, ALIGNFORGE_BUILD_LOCK_WAIT_S="300")
        impatient = python(BUILD, *args, ALIGNFORGE_BUILD_LOCK_WAIT_S="1")
        impatient_out, impatient_err = impatient.communicate(timeout=120)
        first_out, first_err = first.communicate(timeout=300)
        patient_out, patient_err = patient.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert patient.returncode == 0, patient_err[-2000:]
    built, reused = json.loads(first_out.splitlines()[-1]), json.loads(patient_out.splitlines()[-1])
    assert built["reused"] is False and reused == {"version": built["version"], "reused": True}
    assert [v.version for v in DatasetStore(home).list_versions("culturax")] == [built["version"]]
    assert impatient.returncode != 0
    assert f"BuildInProgress: culturax: another build of this dataset is running (pid {first.pid} " in impatient_err


def test_concurrent_writers_of_one_checkpoint_never_share_a_temporary_file(tmp_path: Path) -> None:
    checkpoints = ShardCheckpoints(tmp_path / "work")
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for round_ in range(200):
                checkpoints.save_value("plan", {"writer": writer, "round": round_})
        except BaseException as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert checkpoints.load_value("plan")["round"] == 199
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["plan.json"]  # no temporary left behind
