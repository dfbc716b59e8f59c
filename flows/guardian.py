"""Ends what `alignforge serve` started when serve dies without ending it (kill -9, the OOM killer).

serve starts this watcher in a session of its own, so neither a terminal's Ctrl-C nor a kill of
serve's process group reaches it. Each second it notes serve's descendants (flow-run processes
and whatever they started: Dask workers, vLLM workers) and the flow runs they belong to; once
serve is gone it sends each SIGTERM, then SIGKILL after a grace period, and marks their runs
Crashed. It marks them itself because a flow-run process cannot: its output is a pipe to the
dead serve, so the engine's crash report dies on a broken pipe (Prefect 3.9). It imports Prefect
only then, so it starts in well under a second.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

import psutil

POLL_SECONDS = 1.0
GRACE_SECONDS = 30.0  # time for a flow run to report Crashed on a loaded machine


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def is_gone(process: psutil.Process) -> bool:
    """Exited, or exited and not yet reaped by its parent (a zombie has ended all the same)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def end_processes(processes: Iterable[psutil.Process], grace_seconds: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM each process, SIGKILL those still running after `grace_seconds`; returns the
    ids that had to be killed. psutil refuses to signal a process id reused since it was noted."""
    signalled = []
    for process in processes:
        try:
            process.terminate()
            signalled.append(process)
        except psutil.NoSuchProcess:
            pass
    _, stubborn = psutil.wait_procs(signalled, timeout=grace_seconds)
    for process in stubborn:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(stubborn, timeout=grace_seconds)
    return [process.pid for process in stubborn]


def flow_run_of(process: psutil.Process) -> str | None:
    """The flow run a process works for (the runner gives the engine, and so its children, the id)."""
    try:
        return process.environ().get("PREFECT__FLOW_RUN_ID")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def mark_crashed(flow_run_ids: Iterable[str], message: str) -> None:
    """Set each run that is not final yet to Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            if not client.read_flow_run(flow_run_id).state.is_final():
                client.set_flow_run_state(flow_run_id, Crashed(message=message))


def watch(pid: int, poll_seconds: float = POLL_SECONDS, grace_seconds: float = GRACE_SECONDS) -> None:
    """Wait for process `pid` to end, then end every descendant it had that still runs and mark
    their flow runs Crashed."""
    try:
        watched = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    me = os.getpid()
    seen: dict[int, tuple[psutil.Process, str | None]] = {}
    while not is_gone(watched):
        # Orphans are re-parented once serve dies, so the tree must be noted while it lives.
        seen = {p.pid: (p, run) for p, run in seen.values() if not is_gone(p)}
        seen.update((p.pid, (p, flow_run_of(p))) for p in descendants(pid) if p.pid != me and p.pid not in seen)
        time.sleep(poll_seconds)
    left = [(p, run) for p, run in seen.values() if not is_gone(p)]
    end_processes([p for p, _ in left], grace_seconds)
    runs = sorted({run for _, run in left if run})
    if runs:
        mark_crashed(runs, f"alignforge serve (pid {pid}) ended without stopping this run; its processes were ended")


if __name__ == "__main__":
    watch(int(sys.argv[1]))
