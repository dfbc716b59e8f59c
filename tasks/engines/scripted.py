"""An engine that answers from a script: drives the edge cases of steps in tests (malformed
JSON, labels outside the set, failures, truncation) deterministically, with no model."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from tasks.engines.base import ChatRequest, Choice, Completion, Engine
from tasks.stopping import raise_if_stopped

# A scripted answer is the text to return, or a whole Completion (for errors and truncation).
Answer = str | Completion
Script = Callable[[ChatRequest], Answer] | Mapping[str, Answer] | Iterable[Answer]


def _last_user_message(request: ChatRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


class ScriptedEngine(Engine):
    """`script` is one of:
    - a callable `request -> answer`;
    - a mapping from a substring of the last user message to an answer (first match in the
      mapping's order wins; no match gives a failed Completion);
    - any other iterable: a queue of answers handed out in request order (exhausted: failed).
    """

    backend = "scripted"

    def __init__(self, script: Script, model_id: str = "scripted", revision: str | None = None) -> None:
        super().__init__(model_id, revision)
        self._answer_for: Callable[[ChatRequest], Answer]
        if callable(script):
            self._answer_for = script
        elif isinstance(script, Mapping):
            self._answer_for = lambda request: self._match(script, request)
        else:
            queue: deque[Answer] = deque(script)
            lock = threading.Lock()

            def next_in_queue(_: ChatRequest) -> Answer:
                with lock:
                    return queue.popleft() if queue else Completion.failed("the scripted answer queue is empty")

            self._answer_for = next_in_queue

    @staticmethod
    def _match(script: Mapping[str, Answer], request: ChatRequest) -> Answer:
        message = _last_user_message(request)
        for fragment, answer in script.items():
            if fragment in message:
                return answer
        return Completion.failed(f"no scripted answer matches the message {message[:80]!r}")

    def generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        raise_if_stopped()
        started = time.perf_counter()
        completions = [self._complete(request, self._answer_for(request)) for request in requests]
        self.usage.record(completions, time.perf_counter() - started)
        return completions

    @staticmethod
    def _complete(request: ChatRequest, answer: Answer) -> Completion:
        """A text answer counts one token per space-separated word and is cut at max_tokens,
        as a model would be; a Completion answer is returned exactly as scripted."""
        if isinstance(answer, Completion):
            return answer
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        words = answer.split(" ")
        if len(words) > request.sampling.max_tokens:
            kept = words[:request.sampling.max_tokens]
            choice = Choice(text=" ".join(kept), finish_reason="length", completion_tokens=len(kept))
        else:
            choice = Choice(text=answer, finish_reason="stop", completion_tokens=len(words))
        return Completion(choices=(choice,) * request.sampling.n, prompt_tokens=prompt_tokens, latency_s=0.0)
