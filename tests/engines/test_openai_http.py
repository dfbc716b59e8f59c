"""The HTTP client against our real OpenAI-compatible server: retries, timeouts, validation, keys."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest

from tasks.engines.base import ChatRequest, Completion, Message
from tasks.engines.openai_http import OpenAIEngine, choice_logprobs_of
from tests.engines.openai_server import ServerFaults, running_server
from tasks.engines.scripted import ScriptedEngine
from tests.engines.helpers import ask

SECRET = "sk-test-5ecret-do-not-leak"


def client(base_url: str, **options: object) -> OpenAIEngine:
    settings = {"timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.01} | options
    return OpenAIEngine("scripted", base_url=base_url, **settings)  # type: ignore[arg-type]


def test_retries_injected_503s_then_succeeds() -> None:
    faults = ServerFaults(fail_first=2, fail_status=503)
    with running_server(ScriptedEngine(lambda r: "fine"), faults=faults) as base_url:
        [completion] = client(base_url).generate([ask("hello")])
    assert completion.ok and completion.text == "fine"
    assert faults.received == 3


def test_honours_retry_after_on_429() -> None:
    faults = ServerFaults(fail_first=1, fail_status=429, retry_after_s=0.3)
    with running_server(ScriptedEngine(lambda r: "fine"), faults=faults) as base_url:
        started = time.perf_counter()
        [completion] = client(base_url).generate([ask("hello")])
        elapsed = time.perf_counter() - started
    assert completion.ok
    assert elapsed >= 0.3  # waited as told, not the 0.01 s backoff


def test_gives_up_after_max_retries_with_an_error() -> None:
    faults = ServerFaults(fail_first=100, fail_status=503)
    with running_server(ScriptedEngine(lambda r: "never"), faults=faults) as base_url:
        [completion] = client(base_url, max_retries=2).generate([ask("hello")])
    assert not completion.ok and "3 attempts" in (completion.error or "") and "503" in (completion.error or "")
    assert faults.received == 3


def test_timeout_path_sets_error_after_bounded_retries() -> None:
    faults = ServerFaults(delay_s=1.0)
    with running_server(ScriptedEngine(lambda r: "slow"), faults=faults) as base_url:
        started = time.perf_counter()
        [completion] = client(base_url, timeout_s=0.2, max_retries=1).generate([ask("hello")])
        elapsed = time.perf_counter() - started
    assert completion.error is not None and "timed out" in completion.error
    assert elapsed < 1.5  # two 0.2 s attempts, not the server's 1 s delay each


def test_connection_refused_is_an_error_not_an_exception() -> None:
    [completion] = client("http://127.0.0.1:9/v1", max_retries=1).generate([ask("anyone?")])
    assert completion.error is not None and "connection failed" in completion.error


def test_engine_errors_come_back_without_retry() -> None:
    faults = ServerFaults()
    with running_server(ScriptedEngine(lambda r: Completion.failed("prompt too long")), faults=faults) as base_url:
        [completion] = client(base_url).generate([ask("hello")])
    assert completion.error == "HTTP 400: prompt too long"
    assert faults.received == 1


def test_out_of_set_answer_is_flagged_and_kept() -> None:
    with running_server(ScriptedEngine(lambda r: "maybe")) as base_url:
        [completion] = client(base_url).generate([ask("pick one", choices=("yes", "no"))])
    assert completion.text == "maybe"
    assert completion.error is not None and "not one of the allowed choices" in completion.error


def test_json_schema_reaches_the_engine() -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    seen = []

    def model(request):  # type: ignore[no-untyped-def]
        seen.append(request.json_schema)
        return '{"label": "x"}'

    with running_server(ScriptedEngine(model)) as base_url:
        [completion] = client(base_url).generate([ask("json", json_schema=schema)])
    assert completion.text == '{"label": "x"}' and seen == [schema]


def test_concurrent_requests_are_batched_in_order() -> None:
    batch_sizes = []
    inner = ScriptedEngine(lambda r: r.messages[-1].content.upper())
    original = inner.generate

    def recording_generate(requests):  # type: ignore[no-untyped-def]
        batch_sizes.append(len(requests))
        return original(requests)

    inner.generate = recording_generate  # type: ignore[method-assign]
    with running_server(inner) as base_url:
        completions = client(base_url, max_in_flight=8).generate([ask(f"item {i}") for i in range(16)])
    assert [c.text for c in completions] == [f"ITEM {i}" for i in range(16)]
    assert sum(batch_sizes) == 16


def test_works_when_called_inside_a_running_event_loop() -> None:
    with running_server(ScriptedEngine(lambda r: "from a loop")) as base_url:
        engine = client(base_url)

        async def caller() -> list[Completion]:
            return engine.generate([ask("hello")])

        [completion] = asyncio.run(caller())
    assert completion.text == "from a loop"


def test_api_key_is_sent_but_never_logged_or_shown(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ALIGNFORGE_TEST_KEY", SECRET)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    faults = ServerFaults(fail_first=1, fail_status=503)  # a retry path runs too
    with running_server(ScriptedEngine(lambda r: "ok"), faults=faults, api_key=SECRET) as base_url:
        engine = client(base_url, api_key_env="ALIGNFORGE_TEST_KEY")
        with caplog.at_level(logging.DEBUG):
            completions = engine.generate([ask("hello"), ask("again")])
            refused = client(base_url, api_key_env=None).generate([ask("no key")])
    assert all(c.ok for c in completions)
    assert refused[0].error is not None and "401" in refused[0].error
    shown = [caplog.text, repr(engine), str(engine), str(vars(engine)), *(c.error or "" for c in refused)]
    assert not any(SECRET in text for text in shown)


def test_missing_key_variable_is_named_without_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALIGNFORGE_ABSENT_KEY", raising=False)
    with pytest.raises(ValueError, match="ALIGNFORGE_ABSENT_KEY"):
        OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", api_key_env="ALIGNFORGE_ABSENT_KEY")


def test_label_probabilities_from_token_logprobs_tell_a_shared_first_token_apart() -> None:
    # vLLM-style: the answer "harmful" as tokens "harm" + "ful" + end-of-turn, each with the
    # tokens the choice grammar allowed beside it.
    content = [
        {"token": "harm", "logprob": math.log(0.6),
         "top_logprobs": [{"token": "harm", "logprob": math.log(0.6)}, {"token": "safe", "logprob": math.log(0.4)}]},
        {"token": "ful", "logprob": math.log(0.75),
         "top_logprobs": [{"token": "ful", "logprob": math.log(0.75)}, {"token": "less", "logprob": math.log(0.25)}]},
        {"token": "<|im_end|>", "logprob": 0.0, "top_logprobs": [{"token": "<|im_end|>", "logprob": 0.0}]},
    ]
    got = choice_logprobs_of(("harmful", "harmless", "safe"), {"content": content})
    assert got is not None
    probabilities = {label: math.exp(v) for label, v in got.items()}
    assert math.isclose(probabilities["harmful"], 0.45) and math.isclose(probabilities["harmless"], 0.15)
    assert math.isclose(probabilities["safe"], 0.4)
    assert choice_logprobs_of(("a", "b"), None) is None


def test_a_garbled_answer_is_retried_and_fails_alone() -> None:
    faults = ServerFaults(garble_next=1)
    with running_server(ScriptedEngine(lambda r: "fine"), faults=faults) as base_url:
        garbled, *rest = client(base_url, max_retries=0, max_in_flight=1).generate([ask(f"q{i}") for i in range(3)])
        faults.received, faults.garble_next = 0, 1
        [retried] = client(base_url, max_retries=1).generate([ask("again")])
    assert garbled.error is not None and "not JSON" in garbled.error
    assert [c.text for c in rest] == ["fine", "fine"]
    assert retried.ok and faults.received == 2


def test_an_exception_while_reading_one_answer_fails_that_request_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(ScriptedEngine(lambda r: r.messages[-1].content)) as base_url:
        engine = client(base_url)
        parse = engine._parse

        def fragile_parse(request, data, latency_s):  # type: ignore[no-untyped-def]
            if request.messages[-1].content == "boom":
                raise KeyError("choices")
            return parse(request, data, latency_s)

        monkeypatch.setattr(engine, "_parse", fragile_parse)
        completions = engine.generate([ask("a"), ask("boom"), ask("c")])
    assert [c.text for c in completions] == ["a", "", "c"]
    assert completions[1].error is not None and "KeyError" in completions[1].error


def test_a_server_refusing_the_system_role_gets_it_folded_into_the_user_turn() -> None:
    seen: list[ChatRequest] = []

    def gemma_like(request: ChatRequest) -> str | Completion:
        seen.append(request)
        if any(m.role == "system" for m in request.messages):
            return Completion.failed("System role not supported")
        return request.messages[0].content

    request = ChatRequest(messages=(Message(role="system", content="You label prompts."),
                                    Message(role="user", content="Is this safe?")))
    with running_server(ScriptedEngine(gemma_like)) as base_url:
        engine = client(base_url)
        first = engine.generate([request])
        second = engine.generate([request])
    assert first[0].text == second[0].text == "You label prompts.\n\nIs this safe?"
    assert len(seen) == 3  # refused once, then folded, and folded from the start afterwards
