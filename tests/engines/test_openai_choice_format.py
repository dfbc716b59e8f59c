"""Closed choices against hosted APIs that refuse vLLM's extension: a JSON schema
{"answer": enum} is sent instead, and the answer is read back out of it."""

from __future__ import annotations

from tasks.engines.base import ChatRequest, Message
from tasks.engines.openai_http import OpenAIEngine, answer_field, choice_schema
from tests.engines.openai_server import running_server
from tasks.engines.scripted import ScriptedEngine

QUESTION = ChatRequest(messages=(Message(role="user", content="Is this conversation unsafe?"),),
                       choices=("Yes", "No", "Unsure"))


def test_json_schema_choice_body_has_no_vllm_extension(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    engine = OpenAIEngine("gpt-4o", base_url="http://127.0.0.1:1/v1", choice_format="json_schema")
    body = engine._body(QUESTION)
    assert "structured_outputs" not in body and "logprobs" not in body
    assert body["response_format"]["json_schema"]["schema"] == choice_schema(("Yes", "No", "Unsure"))


def test_answer_field_reads_the_choice_or_keeps_the_raw_text() -> None:
    assert answer_field('{"answer": "No"}') == "No"
    assert answer_field("No") == "No"
    assert answer_field('{"answer": 3}') == '{"answer": 3}'


def test_choice_round_trip_through_a_server_in_json_schema_mode(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    seen = []

    def answer(request: ChatRequest) -> str:
        seen.append(request)
        return '{"answer": "No"}' if request.json_schema is not None else "Maybe"

    with running_server(ScriptedEngine(answer)) as base_url:
        engine = OpenAIEngine("gpt-4o", base_url=base_url, choice_format="json_schema", max_retries=0)
        [completion] = engine.generate([QUESTION])
    assert completion.ok and completion.text == "No"
    assert seen[0].json_schema == choice_schema(("Yes", "No", "Unsure"))
