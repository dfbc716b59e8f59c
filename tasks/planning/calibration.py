"""A model's output tokens per second, measured once per machine and cached under the data home.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.config import alignforge_home
from tasks.engines.base import ChatRequest, Engine, Message, SamplingParams

CALIBRATION_FILE = "calibration.json"
CALIBRATION_PROMPT = "Describe a festival you know well, in a few sentences."


def machine_id() -> str:
    """Names this machine in the calibration cache (throughput depends on the hardware)."""
    return f"{platform.node()}/{platform.machine()}/{os.cpu_count()}cpu"


def calibration_path(home: Path | None = None) -> Path:
    return (home or alignforge_home()) / CALIBRATION_FILE


def cached_throughputs(home: Path | None = None) -> dict[str, float]:
    """Output tokens per second measured on this machine, by engine label."""
    path = calibration_path(home)
    if not path.is_file():
        return {}
    measured = json.loads(path.read_text(encoding="utf-8")).get(machine_id(), {})
    return {label: entry["output_tokens_per_second"] for label, entry in measured.items()}


def calibrate(engine: Engine, n_requests: int = 4, max_tokens: int = 32, home: Path | None = None) -> float:
    """Measure `engine`'s output tokens per second on one batch of `n_requests` short generations
    and cache it for (engine, this machine). Pass an engine without the request cache."""
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    # A first request pays one-off set-up (kernels, lazy allocation) that a build pays once.
    engine.generate([ChatRequest(messages=(Message(role="user", content=CALIBRATION_PROMPT),),
                                 sampling=sampling.model_copy(update={"max_tokens": 1}))])
    requests = [ChatRequest(messages=(Message(role="user", content=f"{CALIBRATION_PROMPT} ({index + 1})"),),
                            sampling=sampling) for index in range(n_requests)]
    started = time.perf_counter()
    completions = engine.generate(requests)
    seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for c in completions)
    if tokens == 0:
        errors = "; ".join(c.error for c in completions if c.error) or "empty answers"
        raise RuntimeError(f"calibrating {engine.identity}: no tokens generated ({errors})")
    rate = tokens / seconds
    _store_calibration(calibration_path(home), f"{engine.backend}:{engine.model_id}",
                       {"output_tokens_per_second": rate, "requests": n_requests, "max_tokens": max_tokens,
                        "tokens": tokens, "seconds": seconds, "measured_at": datetime.now(timezone.utc).isoformat()})
    return rate


def _store_calibration(path: Path, label: str, entry: dict[str, float | int | str]) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.setdefault(machine_id(), {})[label] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a sibling file and rename: a crash never leaves half a cache behind.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    Path(handle.name).replace(path)
