"""A small OpenAI-compatible server in front of any Engine, for the tests.

`/v1/chat/completions` takes the OpenAI fields plus vLLM's structured-output extension
(`structured_outputs: {"choice": [...]}` or `{"json": schema}`; `response_format` with a
`json_schema` also works), and `/v1/models` lists the one served model. Concurrent requests
are gathered into one `Engine.generate` call, so a batching engine stays batched.

It is the real server the fast tests run the HTTP client against; `ServerFaults` injects
failures (the first K requests answered with 503/429 or a cut-short body, a delay) to
exercise retries and timeouts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.engines.base import ChatRequest, Completion, Engine, Message, SamplingParams


@dataclass
class ServerFaults:
    """Failures to inject: the first `fail_first` requests get `fail_status` (with a
    Retry-After header when `retry_after_s` is set), the next `garble_next` a 200 whose JSON
    body is cut short; every request waits `delay_s` first."""

    fail_first: int = 0
    fail_status: int = 503
    retry_after_s: float | None = None
    garble_next: int = 0
    delay_s: float = 0.0
    received: int = 0  # chat requests that reached the server, failed ones included


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class _ChatBody(BaseModel):
    # Unknown OpenAI fields (user, stream_options, ...) are ignored, as most servers do.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[_ChatMessage]
    temperature: float = 1.0  # OpenAI's default, not the engine's
    top_p: float = 1.0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    seed: int | None = None
    repetition_penalty: float = 1.0
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def to_request(self) -> ChatRequest:
        choices, schema = None, None
        if self.structured_outputs:
            choices = self.structured_outputs.get("choice")
            schema = self.structured_outputs.get("json")
            if isinstance(schema, str):
                schema = json.loads(schema)
        if schema is None and self.response_format and self.response_format.get("type") == "json_schema":
            schema = self.response_format.get("json_schema", {}).get("schema")
        max_tokens = self.max_completion_tokens or self.max_tokens or SamplingParams().max_tokens
        return ChatRequest(
            messages=tuple(Message(role=m.role, content=m.content) for m in self.messages),
            sampling=SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=max_tokens,
                                    n=self.n, seed=self.seed, repetition_penalty=self.repetition_penalty),
            choices=tuple(choices) if choices is not None else None,
            json_schema=schema,
        )


class _Batcher:
    """Collects the requests that arrive while the engine is busy and answers them in one call."""

    def __init__(self, engine: Engine, max_batch: int) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[ChatRequest, asyncio.Future[Completion]]] = asyncio.Queue()

    async def answer(self, request: ChatRequest) -> Completion:
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self.queue.put((request, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                completions = await asyncio.to_thread(self.engine.generate, [request for request, _ in batch])
            except Exception as error:  # the engine broke: every waiting request learns why
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), completion in zip(batch, completions, strict=True):
                future.set_result(completion)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from fastapi.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def _choice_logprobs_payload(text: str, choice_logprobs: dict[str, float], top_n: int) -> dict[str, Any]:
    """The label distribution in OpenAI's logprobs shape, each whole label standing as one token."""
    ranked = sorted(choice_logprobs.items(), key=lambda item: item[1], reverse=True)[:top_n]
    return {"content": [{
        "token": text, "logprob": choice_logprobs.get(text, min(choice_logprobs.values())), "bytes": None,
        "top_logprobs": [{"token": label, "logprob": value, "bytes": None} for label, value in ranked],
    }]}


def create_app(engine: Engine, *, served_model_name: str | None = None, faults: ServerFaults | None = None,
               max_batch: int = 64, api_key: str | None = None) -> Any:
    """The app; with `api_key` set, chat requests must carry it as a bearer token."""
    from fastapi import FastAPI, Header, Response

    model_name = served_model_name or engine.model_id
    faults = faults or ServerFaults()
    batcher = _Batcher(engine, max_batch)
    fault_lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="alignforge engine server", lifespan=lifespan)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "alignforge"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: _ChatBody, authorization: str | None = Header(default=None)) -> Any:
        if api_key is not None and authorization != f"Bearer {api_key}":
            return _error(401, "missing or wrong API key")
        async with fault_lock:
            faults.received += 1
            fail = faults.received <= faults.fail_first
            garble = not fail and faults.received <= faults.fail_first + faults.garble_next
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if fail:
            headers = {"Retry-After": str(faults.retry_after_s)} if faults.retry_after_s is not None else None
            return _error(faults.fail_status, "injected failure", headers)
        if garble:
            return Response('{"id": "chatcmpl-', media_type="application/json")
        try:
            request = body.to_request()
        except ValueError as invalid:
            return _error(400, str(invalid))
        completion = await batcher.answer(request)
        if completion.error is not None:
            return _error(400, completion.error)
        choices = []
        for index, choice in enumerate(completion.choices):
            entry: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": choice.text},
                                     "finish_reason": choice.finish_reason, "logprobs": None}
            if body.logprobs and choice.choice_logprobs:
                entry["logprobs"] = _choice_logprobs_payload(choice.text, choice.choice_logprobs,
                                                             body.top_logprobs or 1)
            choices.append(entry)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                      "total_tokens": completion.prompt_tokens + completion.completion_tokens},
        }

    return app


@contextmanager
def running_server(engine: Engine, **app_options: Any) -> Iterator[str]:
    """Serve `engine` from a background thread on a free 127.0.0.1 port; yields the base URL
    (`http://127.0.0.1:PORT/v1`) and stops the server on exit."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # port 0: the OS picks a free port, known before the server starts
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(engine, **app_options), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the engine server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
