"""The OpenAI-compatible HTTP backend: OpenAI, a vLLM server, or the tests' server
(tests/engines/openai_server.py).

Requests go out concurrently (at most `max_in_flight` at once) and are retried with
exponential backoff and jitter on 408/409/429/5xx, timeouts, connection errors and answers
that are not JSON, honouring Retry-After. A request that still fails, or fails in any other
way, comes back as a Completion with `error` set: one request never sinks the batch.

A server whose chat template refuses a system turn (Gemma's: HTTP 400 "System role not
supported") gets the request again with the system text folded into the first user turn, and
every later request of this engine goes folded from the start.

Closed choices use vLLM's `structured_outputs: {"choice": [...]}` extension, so they need a
vLLM-compatible server (OpenAI's own API rejects the field with a 400, which then surfaces as
the Completion's error). The answer is also checked against the set here. Per-choice
probabilities come from the answer's token logprobs, which vLLM computes after the choice
grammar's mask: constrained_choice multiplies the conditionals along the answer's tokens and
shares the tokens beside them out to the labels they lead to, so labels that share a first
token ("Social harm", "Social bias") are told apart. A server that lists whole labels as single
tokens (the tests' server) is read the same way.

The API key is read from the environment variable `api_key_env` (default OPENAI_API_KEY) when
a batch starts; it is never stored on the engine, logged, or put into an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.engines.base import ENGINE_ERROR, ChatRequest, Choice, Completion, Engine
from tasks.engines.chat_template import fold_system_into_user
from tasks.engines.constrained_choice import label_logprobs, most_probable_at_temperature_zero
from tasks.stopping import raise_if_stopped

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
DEFAULT_KEY_VARIABLE = "OPENAI_API_KEY"
TOP_LOGPROBS_LIMIT = 20  # the most OpenAI's API will list


class _Retryable(Exception):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        moment = email.utils.parsedate_to_datetime(value)  # the HTTP-date form
        return max(0.0, moment.timestamp() - time.time())


def choice_logprobs_of(choices: Sequence[str], logprobs: dict[str, Any] | None) -> dict[str, float] | None:
    """Per-label log-probabilities from an answer's OpenAI-shaped token logprobs (see module doc)."""
    content = (logprobs or {}).get("content") or []
    if not content:
        return None
    steps = [(entry["token"], entry["logprob"], [(top["token"], top["logprob"]) for top in entry.get("top_logprobs") or ()])
             for entry in content]
    return label_logprobs(choices, steps)


def refuses_system_role(status: int, message: str) -> bool:
    """A 400 whose message blames the system role: the model's chat template refused it."""
    return status == 400 and "system" in message.lower()


def choice_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {"answer": {"type": "string", "enum": list(choices)}},
            "required": ["answer"], "additionalProperties": False}


def answer_field(text: str) -> str:
    """The `answer` of a {"answer": ...} reply; the raw text when it is not one (then the
    choice check reports it as outside the set)."""
    try:
        answer = json.loads(text).get("answer")
    except (ValueError, AttributeError):
        return text
    return answer if isinstance(answer, str) else text


class OpenAIEngine(Engine):
    backend = "openai"

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        *,
        base_url: str,
        api_key_env: str | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        choice_format: str = "structured_outputs",
    ) -> None:
        super().__init__(model_id, revision)
        self.choice_format = choice_format
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env or DEFAULT_KEY_VARIABLE
        if api_key_env and api_key_env not in os.environ:
            raise ValueError(f"the environment variable {api_key_env} (API key for {self.base_url}) is not set")
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.fold_system = False  # learnt from the server: its chat template refuses a system turn

    def __repr__(self) -> str:
        return f"OpenAIEngine(model_id={self.model_id!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            completions = asyncio.run(self._generate_all(requests))
        else:
            # Called from inside an event loop (a notebook, an async flow): run ours on a worker thread.
            with ThreadPoolExecutor(max_workers=1) as worker:
                completions = worker.submit(asyncio.run, self._generate_all(requests)).result()
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    async def _generate_all(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        import httpx

        api_key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight)
        slots = asyncio.Semaphore(self.max_in_flight)
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_s,
                                     limits=limits) as client:
            outcomes = await asyncio.gather(*(self._complete(client, slots, r) for r in requests),
                                            return_exceptions=True)
        completions = [outcome if isinstance(outcome, Completion)
                       else Completion.failed(f"the request failed: {type(outcome).__name__}: {outcome}"[:500])
                       for outcome in outcomes]
        if api_key:  # belt and braces: no server echo of the key survives into an error message
            completions = [c if c.error is None or api_key not in c.error
                           else Completion.failed(c.error.replace(api_key, "[redacted]"), c.latency_s)
                           for c in completions]
        return completions

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        sampling = request.sampling
        messages = fold_system_into_user(request.messages) if self.fold_system else request.messages
        body: dict[str, Any] = {
            "model": self.model_id, "messages": [m.model_dump() for m in messages],
            "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
            "n": sampling.n,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.repetition_penalty != 1.0:  # a vLLM extension: sent only when it changes something
            body["repetition_penalty"] = sampling.repetition_penalty
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": request.json_schema}}
        if request.choices is not None and self.choice_format == "json_schema":
            # Hosted APIs (OpenAI) refuse vLLM's extension: ask for {"answer": <one of the choices>}.
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "choice", "strict": True, "schema": choice_schema(request.choices)}}
        elif request.choices is not None:
            body["structured_outputs"] = {"choice": list(request.choices)}
            body["logprobs"] = True
            body["top_logprobs"] = min(TOP_LOGPROBS_LIMIT, max(1, len(request.choices)))
        return body

    async def _complete(self, client: Any, slots: asyncio.Semaphore, request: ChatRequest) -> Completion:
        import httpx

        started = time.perf_counter()
        folded = self.fold_system
        body = self._body(request)
        reason = "no attempt made"
        for attempt in range(self.max_retries + 1):
            try:
                async with slots:
                    raise_if_stopped()  # requests still queued behind the slots never go out
                    response = await client.post("/chat/completions", json=body)
                if response.status_code in RETRYABLE_STATUS:
                    raise _Retryable(f"HTTP {response.status_code}",
                                     _retry_after_seconds(response.headers.get("retry-after")))
                if response.status_code != 200:
                    message = self._error_text(response)
                    if not folded and refuses_system_role(response.status_code, message) and any(
                            m.role == "system" for m in request.messages):
                        self.fold_system = True  # for this request again, and every one after it
                        return await self._complete(client, slots, request)
                    return Completion.failed(f"HTTP {response.status_code}: {message}", time.perf_counter() - started)
                try:
                    data = response.json()
                except ValueError as garbled:  # a body cut short on the way: ask again
                    raise _Retryable(f"the answer was not JSON ({garbled})") from garbled
                return self._parse(request, data, time.perf_counter() - started)
            except _Retryable as retryable:
                reason, wait_s = str(retryable), retryable.wait_s
            except httpx.TimeoutException as timeout:
                reason, wait_s = f"timed out after {self.timeout_s} s ({type(timeout).__name__})", None
            except httpx.TransportError as transport:
                reason, wait_s = f"connection failed ({type(transport).__name__})", None
            if attempt < self.max_retries:
                await asyncio.sleep(self._backoff(attempt, wait_s))
        return Completion.failed(f"gave up after {self.max_retries + 1} attempts: {reason}",
                                 time.perf_counter() - started)

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.max_backoff_s)
        # Full jitter: clients that failed together do not come back together.
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    @staticmethod
    def _error_text(response: Any) -> str:
        try:
            return str(response.json()["error"]["message"])[:500]
        except (ValueError, KeyError, TypeError):
            return response.text[:500]

    def _parse(self, request: ChatRequest, data: dict[str, Any], latency_s: float) -> Completion:
        usage = data.get("usage") or {}
        raw_choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        # The API reports tokens for all n answers together; each answer gets its share.
        total_tokens = int(usage.get("completion_tokens") or 0)
        shares = [total_tokens // max(1, len(raw_choices))] * len(raw_choices)
        if shares:
            shares[0] += total_tokens - sum(shares)
        choices, outside_set = [], []
        for raw, tokens in zip(raw_choices, shares, strict=True):
            text = (raw.get("message") or {}).get("content") or ""
            choice_logprobs = None
            if request.choices is not None and self.choice_format == "json_schema":
                text = answer_field(text)
            if request.choices is not None:
                if text.strip() in request.choices:
                    choice_logprobs = choice_logprobs_of(request.choices, raw.get("logprobs"))
                    text = most_probable_at_temperature_zero(request, text.strip(), choice_logprobs)
                else:
                    outside_set.append(text)
            finish = raw.get("finish_reason")
            choices.append(Choice(text=text, finish_reason="length" if finish == "length" else "stop",
                                  completion_tokens=tokens, choice_logprobs=choice_logprobs))
        error = f"answer {outside_set[0][:80]!r} is not one of the allowed choices" if outside_set else None
        if not choices:
            error = "the server returned no choices"
        return Completion(choices=tuple(choices), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          latency_s=latency_s, error=error, reason=ENGINE_ERROR if error else None)
