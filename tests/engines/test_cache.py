"""The request cache: hits skip the model, failures are never stored, reuse=False still writes."""

from __future__ import annotations

import threading
from pathlib import Path

from tasks.engines.base import Completion
from tasks.engines.cache import CachedEngine
from tasks.engines.scripted import ScriptedEngine
from tests.engines.helpers import ask


def echo_model() -> ScriptedEngine:
    return ScriptedEngine(lambda request: f"echo {request.messages[-1].content}")


def test_second_run_is_all_hits_and_calls_no_model(tmp_path: Path) -> None:
    inner = echo_model()
    cached = CachedEngine(inner, tmp_path / "cache.sqlite")
    requests = [ask(f"question {i}") for i in range(5)]
    first = cached.generate(requests)
    assert inner.usage.requests == 5 and not any(c.cached for c in first)

    second = cached.generate(requests)
    assert inner.usage.requests == 5  # zero new model calls
    assert all(c.cached for c in second)
    assert [c.choices for c in second] == [c.choices for c in first]
    assert cached.usage.requests == 10 and cached.usage.cache_hits == 5


def test_cache_survives_a_new_engine_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    CachedEngine(echo_model(), path).generate([ask("persist me")])
    inner = echo_model()
    [completion] = CachedEngine(inner, path).generate([ask("persist me")])
    assert completion.cached and completion.text == "echo persist me"
    assert inner.usage.requests == 0


def test_mixed_hits_and_misses_keep_order(tmp_path: Path) -> None:
    cached = CachedEngine(echo_model(), tmp_path / "cache.sqlite")
    cached.generate([ask("b")])
    completions = cached.generate([ask("a"), ask("b"), ask("c")])
    assert [c.text for c in completions] == ["echo a", "echo b", "echo c"]
    assert [c.cached for c in completions] == [False, True, False]


def test_reuse_off_reads_nothing_but_still_writes(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    inner = echo_model()
    forced = CachedEngine(inner, path, reuse=False)
    forced.generate([ask("q")])
    forced.generate([ask("q")])
    assert inner.usage.requests == 2 and forced.usage.cache_hits == 0
    [completion] = CachedEngine(echo_model(), path).generate([ask("q")])
    assert completion.cached


def test_failures_are_not_stored(tmp_path: Path) -> None:
    answers = iter([Completion.failed("server exploded"), "recovered"])
    inner = ScriptedEngine(lambda request: next(answers))
    cached = CachedEngine(inner, tmp_path / "cache.sqlite")
    assert cached.generate([ask("q")])[0].error == "server exploded"
    [retry] = cached.generate([ask("q")])
    assert retry.ok and not retry.cached and retry.text == "recovered"


def test_key_separates_models_revisions_and_requests(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    one = CachedEngine(ScriptedEngine(lambda r: "one", model_id="m1"), path)
    other_model = CachedEngine(ScriptedEngine(lambda r: "two", model_id="m2"), path)
    other_revision = CachedEngine(ScriptedEngine(lambda r: "three", model_id="m1", revision="abc"), path)
    request = ask("same question")
    assert one.key(request) != other_model.key(request) != other_revision.key(request) != one.key(request)
    assert one.key(request) != one.key(ask("same question", sampling={"seed": 1}))
    assert [e.generate([request])[0].text for e in (one, other_model, other_revision)] == ["one", "two", "three"]


class SaltedEngine(ScriptedEngine):
    """An engine whose answers depend on something requests do not carry (like the embedding
    classifier's label texts)."""

    def __init__(self, answer: str, salt: str) -> None:
        super().__init__(lambda request: answer, model_id="m1")
        self.salt = salt

    @property
    def cache_salt(self) -> str:
        return self.salt


def test_key_separates_what_the_engine_answers_from_beyond_the_request(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    request = ask("same question")
    assert CachedEngine(SaltedEngine("old texts", salt="a"), path).generate([request])[0].text == "old texts"
    answer, = CachedEngine(SaltedEngine("new texts", salt="b"), path).generate([request])
    assert answer.text == "new texts" and not answer.cached
    again, = CachedEngine(SaltedEngine("unused", salt="a"), path).generate([request])
    assert again.text == "old texts" and again.cached


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cached = CachedEngine(echo_model(), tmp_path / "cache.sqlite")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for round_ in range(20):
                [completion] = cached.generate([ask(f"w{worker} r{round_ % 5}")])
                assert completion.text == f"echo w{worker} r{round_ % 5}"
        except BaseException as error:  # surfaced below: a thread's assert would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cached.usage.requests == 80 and cached.usage.cache_hits == 60


def test_identity_is_the_wrapped_engine(tmp_path: Path) -> None:
    inner = ScriptedEngine(["x"], model_id="m", revision="r")
    assert CachedEngine(inner, tmp_path / "c.sqlite").identity == inner.identity == "scripted:m@r"
