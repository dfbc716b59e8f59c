"""Shared engine fixtures: the tiny local models, and engines and servers on them that start
once per session (a vLLM engine or server start costs ~25-60 s on two cores)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.engines.transformers_backend import TransformersEngine
from tests.tiny_model import build_tiny_model

VLLM_CONTEXT = 4096  # room for a Demo-SafetyBench classification prompt in the tiny tokenizer
SERVED_NAME = "tiny-gemma"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> Iterator[TransformersEngine]:
    engine = TransformersEngine(str(tiny_model_dir), batch_size=4, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a Gemma-style chat template: it raises on a system turn."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"), style="gemma")


@pytest.fixture(scope="session")
def vllm_engine(tiny_gemma_dir: Path) -> Iterator[Any]:
    """The in-process vLLM engine on the Gemma-style tiny model (float32: the tests compare
    probabilities with transformers and with the server). Closing twice must be harmless."""
    pytest.importorskip("vllm", reason="vLLM is not installed (install the [vllm] extra to run these)")
    from tasks.engines.vllm_backend import VLLMEngine

    engine = VLLMEngine(str(tiny_gemma_dir), dtype="float32", max_model_len=VLLM_CONTEXT, enforce_eager=True)
    yield engine
    engine.close()
    engine.close()
    assert engine.llm is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tiny_gemma_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """vLLM's own OpenAI server on the Gemma-style tiny model; yields its base URL."""
    pytest.importorskip("vllm", reason="vLLM is not installed (install the [vllm] extra to run these)")
    import httpx

    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_gemma_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(VLLM_CONTEXT), "--enforce-eager", "--dtype", "float32"]
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
