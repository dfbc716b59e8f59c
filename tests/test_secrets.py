"""API keys and Hub tokens: used, never logged, never written into a version or the cache."""

from __future__ import annotations

import logging
from pathlib import Path

from flows.build import run_build
from tests.engines.openai_server import running_server
from tasks.engines.scripted import ScriptedEngine
from tests.conftest import SCRIPTED_CLASSIFIER, SCRIPTED_WRITER, write_scripted_culturax

API_KEY = "sk-test-9f8e7d6c5b4a39281706"
HUB_TOKEN = "hf_testtoken0123456789abcdefXYZ"


def scripted_server_engine() -> ScriptedEngine:
    """One server answers every role: classification requests are closed choices."""
    classifier, writer = ScriptedEngine(SCRIPTED_CLASSIFIER), ScriptedEngine(SCRIPTED_WRITER)
    return ScriptedEngine(lambda request: (classifier if request.choices else writer).generate([request])[0])


def test_build_through_an_authenticated_api_leaks_no_secret(tmp_path: Path, monkeypatch, caplog, capsys) -> None:
    monkeypatch.setenv("ALIGNFORGE_TEST_API_KEY", API_KEY)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    caplog.set_level(logging.DEBUG)
    with running_server(scripted_server_engine(), api_key=API_KEY) as base_url:
        engine = {"backend": "openai", "base_url": base_url, "api_key_env": "ALIGNFORGE_TEST_API_KEY", "max_retries": 0}
        files = write_scripted_culturax(tmp_path, engine=engine)
        home = tmp_path / "home"
        result = run_build(str(files["spec"]), str(files["profile"]), home=str(home))
    version = Path(result["path"])
    assert (version / "manifest.json").is_file()
    # The server refuses requests without the key: a published version proves it was sent.
    written = [p for p in home.rglob("*") if p.is_file()] + [files["profile"]]
    assert any(p.suffix == ".sqlite" for p in written)
    for path in written:
        data = path.read_bytes()
        assert API_KEY.encode() not in data, path
        assert HUB_TOKEN.encode() not in data, path
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert API_KEY not in text and HUB_TOKEN not in text
