"""Progress of CLI runs per stage: bars on a terminal, one line per event in a log (the
Prefect UI shows task runs instead).

Steps call `report(stage, done, total)`: `done == 0` when a stage starts, then once per
finished shard (a global stage has one).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ProgressHook = Callable[[str, int, int], None]
current_hook: contextvars.ContextVar[ProgressHook | None] = contextvars.ContextVar("alignforge_progress", default=None)


def report(stage: str, done: int, total: int) -> None:
    hook = current_hook.get()
    if hook is not None:
        hook(stage, done, total)


@contextlib.contextmanager
def reporting_to(hook: ProgressHook) -> Iterator[None]:
    token = current_hook.set(hook)
    try:
        yield
    finally:
        current_hook.reset(token)


@contextlib.contextmanager
def terminal_progress() -> Iterator[None]:
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bars:
        tasks: dict[str, int] = {}

        def hook(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        with reporting_to(hook):
            yield


def duration(seconds: float) -> str:
    """Seconds as a log reads them: `42 s`, `3 min 5 s`, `1 h 02 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_line(stage: str, done: int, total: int, build_seconds: float, stage_seconds: float) -> str:
    """One log line for a progress event; while shards remain, the stage's time left at the
    pace of its finished shards."""
    if done == 0:
        what = "started" + (f", {total} shards" if total > 1 else "")
    elif done < total:
        left = stage_seconds / done * (total - done)
        what = f"shard {done}/{total} done, about {duration(left)} left in this stage"
    elif total > 1:
        what = f"shard {done}/{total} done, stage done in {duration(stage_seconds)}"
    else:
        what = f"done in {duration(stage_seconds)}"
    return f"[{duration(build_seconds):>12}] {stage:<9} {what}"


def write_stdout(line: str) -> None:
    # Not print(): a flow with log_prints turns prints into Prefect log records on stderr.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def log_progress(write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Progress as plain lines (stdout by default, flushed at once): what a log file or CI shows."""
    write = write or write_stdout
    build_started = clock()
    stage_started: dict[str, float] = {}

    def hook(stage: str, done: int, total: int) -> None:
        now = clock()
        started = stage_started.setdefault(stage, now)
        write(progress_line(stage, done, total, now - build_started, now - started))

    with reporting_to(hook):
        yield


def cli_progress(is_terminal: bool) -> contextlib.AbstractContextManager[None]:
    return terminal_progress() if is_terminal else log_progress()
