"""The guardian ends a dead serve's process tree; `end_processes` escalates to SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from flows.guardian import end_processes, flow_run_of, is_gone
from tasks.config import PROJECT_ROOT

# Stands in for serve: starts a flow-run-like child that itself starts a grandchild, then waits.
SERVE_STAND_IN = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"


def wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_guardian_ends_the_tree_of_a_serve_killed_with_sigkill() -> None:
    serve = subprocess.Popen([sys.executable, "-c", SERVE_STAND_IN], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(serve.stdout.readline()))
    assert wait_until(lambda: len(child.children()) == 1, 30)
    tree = [child, *child.children()]
    guardian = subprocess.Popen([sys.executable, "-m", "flows.guardian", str(serve.pid)], cwd=PROJECT_ROOT,
                                start_new_session=True)
    try:
        time.sleep(3)  # the guardian notes the tree while serve lives
        assert all(not is_gone(p) for p in tree)
        serve.send_signal(signal.SIGKILL)
        serve.wait()
        assert wait_until(lambda: all(is_gone(p) for p in tree), 20), "serve's flow runs outlived it"
        assert guardian.wait(timeout=20) == 0
    finally:
        for process in [*tree, psutil.Process(guardian.pid) if guardian.poll() is None else None]:
            if process is not None and not is_gone(process):
                process.kill()


def test_end_processes_kills_what_ignores_sigterm_after_the_grace_period() -> None:
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stubborn.stdout.readline().strip() == "ready"
    processes = [psutil.Process(stubborn.pid), psutil.Process(polite.pid)]
    assert end_processes(processes, grace_seconds=1) == [stubborn.pid]  # only the stubborn one needed SIGKILL
    assert all(is_gone(p) for p in processes)


def test_guardian_of_a_process_that_is_already_gone_exits_at_once() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    guardian = subprocess.run([sys.executable, "-m", "flows.guardian", str(gone.pid)], cwd=PROJECT_ROOT, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert guardian.returncode == 0


def test_a_process_is_known_by_the_flow_run_in_its_environment() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              env={**os.environ, "PREFECT__FLOW_RUN_ID": "0195f3a2-7c1e-7d00-8a4b-1f2e3d4c5b6a"})
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             env={k: v for k, v in os.environ.items() if k != "PREFECT__FLOW_RUN_ID"})
    try:
        assert flow_run_of(psutil.Process(worker.pid)) == "0195f3a2-7c1e-7d00-8a4b-1f2e3d4c5b6a"
        assert flow_run_of(psutil.Process(plain.pid)) is None
    finally:
        worker.kill()
        plain.kill()
        worker.wait()
        plain.wait()
