"""Ctrl-C and SIGTERM stop a build within seconds, keep its finished shards and leave no
process behind (the temporary Prefect server included): a real `alignforge build` process,
a real signal.

The build runs a tiny random-weight model that never stops early, with long answers and
small shards, so Stage II takes long enough for the signal to land between shards. The
CLI's log lines (stdout is a pipe, not a terminal) say when the first respond shard is done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tasks.config import CODE_ROOT, DATA_DIR
from tasks.release.store import DatasetStore
from tasks.stopping import BuildStopped, clear_stop, raise_if_stopped, request_stop, stop_on_signals
from tests.tiny_model import build_tiny_model

STOPPED_WITHIN_SECONDS = 30  # from the signal to the exit, Prefect's teardown included, on 2 busy cores


@pytest.fixture(autouse=True)
def no_stop_left_behind():
    yield
    clear_stop()  # a stop requested in this process must not stop the next test's engines


@pytest.fixture(scope="module")
def slow_build(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stop")
    model = build_tiny_model(root / "tiny-model")
    profile = {
        "name": "tiny-slow", "description": "tiny random model writing long answers", "source": "sample",
        "default_engine": {"backend": "transformers", "model": str(model), "device": "cpu", "batch_size": 4},
        "models": {"mistralai/Mistral-7B-Instruct-v0.3": {"backend": "embedding", "model": "packaged:minilm"}},
        "expansion_target": 0, "candidates_per_target": 1, "max_response_tokens": 240, "feedback_iterations": 0,
        "judge_mode": "choice", "classification_threshold": 0.05, "limit": 24, "shard_size": 2,
    }
    (root / "tiny-slow.yaml").write_text(yaml.safe_dump(profile))
    spec = yaml.safe_load((DATA_DIR / "specs" / "culturax.yaml").read_text())
    spec["classification"]["require_label"] = []
    spec["responses"].update(judge_threshold=0.0, filters={
        "min_words": 0, "max_prompt_echo": 1.0, "min_english_share": 0.0, "near_duplicate_tau": 0,
        "refusal_rejected_for": [], "reject_truncated": False})
    (root / "culturax.yaml").write_text(yaml.safe_dump(spec))
    return {"spec": root / "culturax.yaml", "profile": root / "tiny-slow.yaml", "root": root}


def start_cli_build(files: dict[str, Path], home: Path, prefect_home: Path) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(CODE_ROOT), "ALIGNFORGE_HOME": str(home),
                   "PREFECT_HOME": str(prefect_home), "PYTHONUNBUFFERED": "1"}
    environment.pop("PREFECT_API_URL", None)  # its own temporary server, as a user's build has
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "build", str(files["spec"]), "--profile", str(files["profile"])],
        cwd=CODE_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group, as a terminal gives a foreground job


def wait_for_line(process: subprocess.Popen, fragment: str, timeout: float) -> list[str]:
    """stdout lines up to the first holding `fragment`; fails if the build ends first."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if fragment in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no line with {fragment!r} in {timeout} s:\n{''.join(lines)}"
    return lines


def finished_shards(home: Path, stage: str) -> int:
    return sum(1 for _ in home.glob(f"culturax/.work/*/{stage}/shard-*/report.json"))


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("how", ["SIGTERM to the build", "Ctrl-C to its process group"])
def test_a_signal_stops_the_build_at_a_shard_boundary_and_the_next_run_resumes(slow_build, tmp_path, how) -> None:
    home, prefect_home = tmp_path / "home", tmp_path / "prefect"
    process = start_cli_build(slow_build, home, prefect_home)
    try:
        lines = wait_for_line(process, "respond   shard 1/", timeout=600)
        children = descendants(process.pid)
        assert children, "the build should have started a temporary Prefect server"
        signalled = time.monotonic()
        if how.startswith("SIGTERM"):
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=STOPPED_WITHIN_SECONDS * 4)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    waited = time.monotonic() - signalled
    expected = signal.SIGTERM if how.startswith("SIGTERM") else signal.SIGINT
    assert process.returncode == 128 + expected, stderr[-3000:]
    assert waited < STOPPED_WITHIN_SECONDS, f"took {waited:.0f} s to stop"
    print(f"{how}: stopped {waited:.1f} s after the signal")
    assert f"stopped by {expected.name}" in stderr and "Traceback" not in stderr
    assert still_running(children) == [], "processes left behind"

    total = int(lines[-1].split("respond   shard 1/")[1].split()[0].rstrip(","))
    kept = finished_shards(home, "respond")
    assert 1 <= kept < total, f"{kept} of {total} respond shards finished"
    assert DatasetStore(home).latest("culturax") is None  # nothing published
    if not how.startswith("SIGTERM"):
        return  # resuming is the same after either signal; once is enough

    resumed = start_cli_build(slow_build, home, prefect_home)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]
    assert DatasetStore(home).latest("culturax") is not None


def test_engines_raise_at_the_next_request_once_a_stop_is_requested(tmp_path) -> None:
    from tasks.engines.base import ChatRequest, Message
    from tasks.engines.scripted import ScriptedEngine

    engine = ScriptedEngine(["an answer", "another"])
    request = ChatRequest(messages=(Message(role="user", content="hi"),))
    assert engine.generate([request])[0].text == "an answer"
    request_stop("SIGTERM")
    with pytest.raises(BuildStopped, match="stopped by SIGTERM"):
        engine.generate([request])
    clear_stop()
    assert engine.generate([request])[0].text == "another"


def test_a_second_signal_interrupts_at_once() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(BuildStopped):
            raise_if_stopped()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs in the main thread between bytecodes
    assert signal.getsignal(signal.SIGTERM) is previous
