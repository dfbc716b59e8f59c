"""Engines: one interface (base.Engine) over vLLM, OpenAI-compatible HTTP, transformers,
embeddings and scripted answers. `create_engine` builds one from a profile's EngineConfig;
each backend's heavy imports happen only when that backend is chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas.profile import EngineConfig
from tasks.engines.base import ChatRequest, Choice, Completion, Engine, EngineUsage, Message, SamplingParams

__all__ = [
    "ChatRequest", "Choice", "Completion", "Engine", "EngineUsage", "Message", "SamplingParams", "create_engine",
]


def create_engine(
    config: EngineConfig,
    spec_model_id: str,
    *,
    cache_path: Path | None,
    reuse_cache: bool = True,
    label_descriptions: Mapping[str, str | Sequence[str]] | None = None,
) -> Engine:
    """The engine a profile asks for, behind the request cache when `cache_path` is given
    (scripted engines are never cached: their answers are the test's, not a model's)."""
    model = config.resolved_model(spec_model_id)
    engine: Engine
    if config.backend == "transformers":
        from tasks.engines.transformers_backend import TransformersEngine

        engine = TransformersEngine(model, config.revision, device=config.device, dtype=config.dtype,
                                    batch_size=config.batch_size, max_model_len=config.max_model_len)
    elif config.backend == "vllm":
        from tasks.engines.vllm_backend import VLLMEngine

        engine = VLLMEngine(model, config.revision, dtype=config.dtype,
                            tensor_parallel_size=config.tensor_parallel_size,
                            gpu_memory_utilization=config.gpu_memory_utilization,
                            max_model_len=config.max_model_len, enforce_eager=config.enforce_eager)
    elif config.backend == "openai":
        from tasks.engines.openai_http import OpenAIEngine

        if config.base_url is None:
            raise ValueError(f"the openai backend for {model!r} needs base_url in the profile")
        engine = OpenAIEngine(model, config.revision, base_url=config.base_url, api_key_env=config.api_key_env,
                              max_in_flight=config.max_in_flight, timeout_s=config.timeout_s,
                              max_retries=config.max_retries, choice_format=config.choice_format)
    elif config.backend == "embedding":
        from tasks.engines.embedding import EmbeddingClassifierEngine

        engine = EmbeddingClassifierEngine(model, config.revision, label_descriptions=label_descriptions,
                                           device=config.device, batch_size=config.batch_size)
    elif config.backend == "scripted":
        from tasks.engines.scripted import ScriptedEngine

        return ScriptedEngine(config.scripted_answers or {}, model, config.revision)
    else:
        raise ValueError(f"unknown engine backend {config.backend!r}")
    if cache_path is None:
        return engine
    from tasks.engines.cache import CachedEngine

    return CachedEngine(engine, cache_path, reuse=reuse_cache)
