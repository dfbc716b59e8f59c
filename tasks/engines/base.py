"""The one interface every LLM step talks to.

A step hands an engine a batch of `ChatRequest`s (a whole shard at once, so the backend
can batch) and gets one `Completion` per request back, in order. Backends (vLLM,
OpenAI-compatible HTTP, transformers, embeddings, scripted) implement `Engine.generate`.
A backend never raises for one bad answer: it returns a Completion with `error` set, so
one failure never sinks a shard.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.sampling import SamplingParams
from tasks.stopping import raise_if_stopped

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "error"]

# Why a request failed, in the words of a reject reason.
PROMPT_TOO_LONG = "prompt_too_long"  # refused before the batch: prompt plus answer exceed the context
TEMPLATE_ERROR = "template_error"  # the model's chat template refused the conversation
ENGINE_ERROR = "engine_error"  # anything else the backend reported


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class ChatRequest(BaseModel):
    """One chat call. `choices` (closed label set) and `json_schema` constrain the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[Message, ...]
    sampling: SamplingParams = SamplingParams()
    choices: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> ChatRequest:
        if self.choices is not None and self.json_schema is not None:
            raise ValueError("a request is constrained by choices or by a JSON schema, not both")
        if self.choices is not None and len(set(self.choices)) != len(self.choices):
            raise ValueError("choices must be unique")
        return self

    def cache_key(self) -> str:
        """Stable digest of everything that determines the answer (backend and model are added by the cache)."""
        payload = self.model_dump(mode="json")
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Choice:
    """One sampled answer. `choice_logprobs` maps each allowed label to its log-probability
    when the backend can score a closed choice (transformers / vLLM logprobs)."""

    text: str
    finish_reason: FinishReason
    completion_tokens: int
    choice_logprobs: dict[str, float] | None = None


@dataclass(frozen=True)
class Completion:
    choices: tuple[Choice, ...]
    prompt_tokens: int
    latency_s: float
    error: str | None = None  # set when the backend gave up on this request after its retries
    cached: bool = False
    reason: str | None = None  # with `error`: PROMPT_TOO_LONG, TEMPLATE_ERROR or ENGINE_ERROR

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.choices)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    @classmethod
    def failed(cls, error: str, latency_s: float = 0.0, reason: str = ENGINE_ERROR) -> Completion:
        return cls(choices=(), prompt_tokens=0, latency_s=latency_s, error=error, reason=reason)


@dataclass
class EngineUsage:
    """Running totals an engine keeps, for the manifest and the budget."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fresh_completion_tokens: int = 0  # of requests the backend really ran (not cache hits): throughput
    errors: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)

    def record(self, completions: Sequence[Completion], seconds: float) -> None:
        self.seconds += seconds
        for completion in completions:
            self.requests += 1
            self.cache_hits += completion.cached
            self.errors += completion.error is not None
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            if not completion.cached:
                self.fresh_completion_tokens += completion.completion_tokens
                self.latencies_s.append(completion.latency_s)

    def __add__(self, other: EngineUsage) -> EngineUsage:
        """Totals of two engines (or two runs of one)."""
        total = EngineUsage(**{name: getattr(self, name) + getattr(other, name) for name in _COUNTERS})
        total.latencies_s = self.latencies_s + other.latencies_s
        return total

    def __sub__(self, earlier: EngineUsage) -> EngineUsage:
        """What the engine did since the `earlier` reading of its running totals."""
        since = EngineUsage(**{name: getattr(self, name) - getattr(earlier, name) for name in _COUNTERS})
        since.latencies_s = self.latencies_s[len(earlier.latencies_s):]
        return since

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "errors": self.errors,
            "seconds": round(self.seconds, 3), "load_seconds": round(self.load_seconds, 3),
        }


_COUNTERS = tuple(f.name for f in fields(EngineUsage) if f.name != "latencies_s")


class Engine(ABC):
    """A loaded model behind one backend. `model_id` names the weights (hub id or path)
    and `revision` pins them; both go into cache keys and manifests."""

    backend: str = "abstract"

    def __init__(self, model_id: str, revision: str | None = None) -> None:
        self.model_id = model_id
        self.revision = revision
        self.usage = EngineUsage()

    @abstractmethod
    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer every request, in order; never raise for a single bad answer."""

    def close(self) -> None:
        """Release the model (GPU memory) before the next stage loads another."""

    @property
    def identity(self) -> str:
        return f"{self.backend}:{self.model_id}@{self.revision or 'unpinned'}"

    @property
    def cache_salt(self) -> str | None:
        """What else, beyond model, revision and request, decides the answers (None: nothing)."""
        return None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessEngine(Engine):
    """A model loaded in this process. Steps running in threads share one engine, so calls
    take turns: the model already uses every core (or the GPU), vLLM's LLM is not
    thread-safe, and seeded sampling is only reproducible when no other batch draws from
    the random state meanwhile."""

    def __init__(self, model_id: str, revision: str | None = None) -> None:
        super().__init__(model_id, revision)
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        raise_if_stopped()
        with self._lock:
            raise_if_stopped()  # the wait for the model may have outlasted a stop request
            return self._generate_all(requests)

    @abstractmethod
    def _generate_all(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer every request, in order, with the model to itself."""
