"""Operations end to end against a real Prefect server (SQLite) on 127.0.0.1: `alignforge serve`
started outside the project serves deployments, runs triggered through the Prefect API leave
their artifacts, two triggers of one deployment run one after the other, and a run whose serve
is killed ends up Crashed with no process left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.serve import ZOMBIE_AUTOMATION
from tasks.config import PROJECT_ROOT
from tests.engines.openai_server import ServerFaults, running_server
from tasks.release.checkpoint import LOCK_FILE
from tasks.release.store import DatasetStore
from tests.conftest import write_scripted_culturax
from tests.test_secrets import scripted_server_engine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    environment = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_API_URL": api,
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                   # A run that found its deployment busy is tried again after 2 s (default 30 s).
                   "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2"}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "prefect server")
        with temporary_settings({PREFECT_API_URL: api}):
            yield api, environment
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def serving(prefect_server, folder: Path, name: str, parameters: dict) -> Iterator[subprocess.Popen]:
    """`alignforge serve` of one build deployment, started in `folder` (not the project)."""
    api, environment = prefect_server
    schedules = folder / "schedules.yaml"
    schedules.write_text(yaml.safe_dump({"deployments": [
        {"name": name, "flow": "build", "cron": "0 3 * * 1", "profile": parameters.pop("profile"),
         "parameters": parameters}]}))
    log = (folder / "serve.log").open("w")  # serve's and its flow runs' output, for a failing test
    served = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--schedules", str(schedules)], cwd=folder,
                              env={**environment, "PYTHONPATH": str(PROJECT_ROOT), "PREFECT_RUNNER_POLL_FREQUENCY": "2"},
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{api}/deployments/name/build-dataset/{name}", timeout=2).status_code == 200,
                   90, "the served deployment")
        yield served
    finally:
        if served.poll() is None:
            served.terminate()
            served.wait(timeout=60)
        log.close()


def scripted_parameters(files: dict[str, Path], home: Path) -> dict:
    return {"dataset": str(files["spec"]), "profile": str(files["profile"]), "home": str(home)}


def final_state(flow_run_id, timeout: float):
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state.is_final():
                return flow_run
            time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} still {flow_run.state.name} after {timeout} s")


def test_served_deployment_runs_through_the_api_and_leaves_artifacts(prefect_server, tmp_path: Path) -> None:
    api, _ = prefect_server
    files = write_scripted_culturax(tmp_path)
    home = tmp_path / "home"
    with serving(prefect_server, tmp_path, "scripted-culturax", scripted_parameters(files, home)):
        deployment = httpx.get(f"{api}/deployments/name/build-dataset/scripted-culturax").json()
        flow_run = run_deployment("build-dataset/scripted-culturax", timeout=240)
        assert flow_run.state.is_completed(), flow_run.state
        artifacts = httpx.post(f"{api}/artifacts/filter", json={"limit": 200, "sort": "CREATED_DESC",
                                                               "flow_runs": {"id": {"any_": [str(flow_run.id)]}}}).json()
        automations = httpx.post(f"{api}/automations/filter", json={}).json()
    assert deployment["entrypoint"] == "flows/build.py:build_dataset"  # not relative to where serve started
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["global_concurrency_limit"]["limit"] == 1
    run = str(flow_run.id).replace("-", "")[-12:]
    by_key = {artifact["key"]: artifact for artifact in artifacts if artifact["key"]}
    assert {f"culturax-{what}-{run}" for what in ("classify", "dedup", "respond", "card", "version")} <= set(by_key)
    assert by_key[f"culturax-card-{run}"]["data"].startswith("```yaml\n")
    assert by_key[f"culturax-version-{run}"]["data"].startswith("[culturax ")
    assert [a["name"] for a in automations].count(ZOMBIE_AUTOMATION) == 1
    assert any(p.name == "manifest.json" for p in home.glob("culturax/*/manifest.json"))


def test_two_triggers_of_one_deployment_run_one_after_the_other(prefect_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(scripted_server_engine(), faults=ServerFaults(delay_s=0.05)) as base_url:
        files = write_scripted_culturax(tmp_path, engine={"backend": "openai", "base_url": base_url, "max_retries": 0})
        with serving(prefect_server, tmp_path, "culturax-twice", scripted_parameters(files, home)):
            triggered = [run_deployment("build-dataset/culturax-twice", timeout=0) for _ in range(2)]
            runs = [final_state(flow_run.id, 300) for flow_run in triggered]
            with get_client(sync_client=True) as client:
                waited = [{state.name for state in client.read_flow_run_states(run.id)} for run in runs]
    assert all(run.state.is_completed() for run in runs), [run.state for run in runs]
    # Either may be picked up first (both were scheduled for now); the other waited for it.
    [waiter] = [run for run, states in zip(runs, waited) if "AwaitingConcurrencySlot" in states]
    [other] = [run for run in runs if run.id != waiter.id]
    assert other.end_time <= waiter.start_time  # never at once
    # The second found the first's version (same inputs) instead of publishing a copy.
    assert len(DatasetStore(home).list_versions("culturax")) == 1


def flow_run_process(home: Path) -> tuple[psutil.Process, str]:
    """The build's process and flow run, from the work folder lock it holds."""
    holder = json.loads((home / "culturax" / ".work" / LOCK_FILE).read_text())
    return psutil.Process(int(holder["pid"])), holder["flow_run"]


@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "sigterm", "ctrl-c"])
def test_a_run_whose_serve_ends_ends_too_and_says_so(prefect_server, tmp_path: Path, ending) -> None:
    """kill -9: the guardian ends the run, which reports Crashed. SIGTERM or Ctrl-C: the runner
    cancels it (Cancelled). Either way no process is left and the run is not left Running."""
    home = tmp_path / "home"
    lock = home / "culturax" / ".work" / LOCK_FILE
    with running_server(scripted_server_engine(), faults=ServerFaults(delay_s=1.0)) as base_url:
        files = write_scripted_culturax(tmp_path, engine={"backend": "openai", "base_url": base_url, "max_retries": 0})
        with serving(prefect_server, tmp_path, f"culturax-{ending.name.lower()}", scripted_parameters(files, home)) as served:
            run_deployment(f"build-dataset/culturax-{ending.name.lower()}", timeout=0)
            wait_until(lambda: lock.is_file() and "flow_run" in lock.read_text(), 120, "the running build")
            process, flow_run_id = flow_run_process(home)
            served.send_signal(ending)
            served.wait(timeout=60)
            process.wait(timeout=90)  # ended with serve, not left running
            ended = final_state(flow_run_id, 120)
    assert (ended.state.is_crashed() if ending == signal.SIGKILL else ended.state.is_cancelled()), ended.state


# A serve stand-in whose flow-run child cannot report anything (it only sleeps).
SILENT_SERVE = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("ready", flush=True)
time.sleep(600)
"""


def test_the_guardian_marks_the_runs_of_a_killed_serve_crashed(prefect_server) -> None:
    from prefect import flow
    from prefect.states import Running

    _, environment = prefect_server
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(flow(name="stand-in")(lambda: None))
        client.set_flow_run_state(flow_run.id, Running())
    serve = subprocess.Popen([sys.executable, "-c", SILENT_SERVE], stdout=subprocess.PIPE, text=True,
                             env={**environment, "PREFECT__FLOW_RUN_ID": str(flow_run.id)})
    assert serve.stdout.readline().strip() == "ready"
    guardian = subprocess.Popen([sys.executable, "-m", "flows.guardian", str(serve.pid)], cwd=PROJECT_ROOT,
                                env=environment, start_new_session=True)
    time.sleep(3)  # the guardian notes the tree while serve lives
    serve.kill()
    serve.wait()
    assert guardian.wait(timeout=120) == 0
    ended = final_state(flow_run.id, 10)
    assert ended.state.is_crashed() and f"alignforge serve (pid {serve.pid})" in ended.state.message


@pytest.mark.slow
def test_a_run_that_stops_sending_heartbeats_is_marked_crashed_by_the_server(prefect_server, tmp_path: Path) -> None:
    """Everything killed at once (serve, its guardian, the flow run): nothing can report, so
    only the zombie automation can end the run: Crashed within three heartbeats and a bit."""
    home = tmp_path / "home"
    lock = home / "culturax" / ".work" / LOCK_FILE
    with running_server(scripted_server_engine(), faults=ServerFaults(delay_s=1.0)) as base_url:
        files = write_scripted_culturax(tmp_path, engine={"backend": "openai", "base_url": base_url, "max_retries": 0})
        with serving(prefect_server, tmp_path, "culturax-zombie", scripted_parameters(files, home)) as served:
            run_deployment("build-dataset/culturax-zombie", timeout=0)
            wait_until(lambda: lock.is_file() and "flow_run" in lock.read_text(), 120, "the running build")
            process, flow_run_id = flow_run_process(home)
            time.sleep(5)  # past the first heartbeat
            # The guardian first and then serve, so neither can report; then the orphaned run.
            guardians = [p for p in psutil.Process(served.pid).children() if "flows.guardian" in p.cmdline()]
            for victim in [*guardians, psutil.Process(served.pid), process, *process.children(recursive=True)]:
                victim.kill()
            served.wait()
            ended = final_state(flow_run_id, 180)
    assert ended.state.is_crashed(), ended.state
    assert "heartbeat" in (ended.state.message or "")
