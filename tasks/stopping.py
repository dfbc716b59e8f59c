"""Stopping a build on request (Ctrl-C, SIGTERM) at the next request boundary.

A signal only sets a flag; engines check it before each batch of requests (the
transformers backend also between generated tokens) and raise `BuildStopped`, so a shard
in progress ends within seconds and is not checkpointed, while finished shards stay on
disk for the next run to resume from. The flag is process-wide because a signal is.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = threading.Event()
_reason: list[str] = []


class BuildStopped(Exception):
    """The build was asked to stop; `signal_name` says by what (e.g. SIGTERM)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


def request_stop(reason: str) -> None:
    if not _requested.is_set():
        _reason.append(reason)
        _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def raise_if_stopped() -> None:
    if _requested.is_set():
        raise BuildStopped(_reason[0])


def clear_stop() -> None:
    _requested.clear()
    _reason.clear()


@contextlib.contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While the body runs, the first of `signals` asks the build to stop at the next request
    boundary; a second one interrupts the main thread at once. Outside the main thread
    (where Python delivers no signals) this only clears an earlier request."""
    clear_stop()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame: object) -> None:
        if stop_requested():
            raise KeyboardInterrupt
        request_stop(signal.Signals(number).name)
        sys.stderr.write(f"{signal.Signals(number).name}: stopping at the next model request "
                         "(finished shards are kept); send it again to interrupt at once\n")

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
