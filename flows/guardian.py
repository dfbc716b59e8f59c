"""Ends what `alignforge serve` started when serve dies without ending it (kill -9, the OOM killer).

serve starts this watcher in a session of its own, so neither a terminal's Ctrl-C nor a kill of
serve's process group reaches it. Each second it notes serve's descendants (flow-run processes
and whatever they started: Dask workers, vLLM workers); once serve is gone it sends each SIGTERM,
which the Prefect engine in a flow-run process answers by marking its run Crashed, then SIGKILL
after a grace period. It imports nothing but psutil, so it starts in well under a second.
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


def watch(pid: int, poll_seconds: float = POLL_SECONDS, grace_seconds: float = GRACE_SECONDS) -> None:
    """Wait for process `pid` to end, then end every descendant it had that still runs."""
    try:
        watched = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    while not is_gone(watched):
        # Orphans are re-parented once serve dies, so the tree must be noted while it lives.
        seen = {p.pid: p for p in seen.values() if not is_gone(p)}
        seen.update((p.pid, p) for p in descendants(pid) if p.pid != me)
        time.sleep(poll_seconds)
    end_processes([p for p in seen.values() if not is_gone(p)], grace_seconds)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
