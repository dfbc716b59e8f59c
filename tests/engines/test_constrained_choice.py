"""Label probabilities from one constrained answer's token logprobs (constrained_choice)."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.engines.constrained_choice import label_logprobs

END = "<|im_end|>"


def probabilities(labels: tuple[str, ...], steps: list) -> dict[str, float]:  # type: ignore[type-arg]
    logprobs = label_logprobs(labels, steps)
    assert logprobs is not None
    return {label: math.exp(value) for label, value in logprobs.items()}


def step(token: str, top: dict[str, float]) -> tuple[str, float, list[tuple[str, float]]]:
    """One generated token with the (renormalised) probabilities vLLM lists beside it."""
    return token, math.log(top[token]), [(text, math.log(p)) for text, p in top.items()]


def test_labels_sharing_a_first_token_are_told_apart() -> None:
    # The old first-token estimate gave both "Social ..." labels 0.35: both below delta 0.5.
    labels = ("Social harm", "Social bias", "Physical harm")
    steps = [step("Social", {"Social": 0.7, "Physical": 0.3}), step(" harm", {" harm": 0.8, " bias": 0.2}),
             step(END, {END: 1.0})]
    got = probabilities(labels, steps)
    assert math.isclose(got["Social harm"], 0.56) and math.isclose(got["Social bias"], 0.14)
    assert math.isclose(got["Physical harm"], 0.3)


def test_a_label_that_begins_another_takes_only_the_end_of_turn_mass() -> None:
    steps = [step("harm", {"harm": 0.9, "safe": 0.1}), step(END, {END: 0.6, "ful": 0.4})]
    got = probabilities(("harm", "harmful", "safe"), steps)
    assert math.isclose(got["harm"], 0.54) and math.isclose(got["harmful"], 0.36) and math.isclose(got["safe"], 0.1)


def test_shared_and_unlisted_mass_is_spread_over_the_labels_it_can_reach() -> None:
    labels = ("Social harm", "Social bias", "Physical harm", "Economic harm", "Legal harm")
    # "Soc" leads to both Social labels (split evenly); 0.1 is not listed: Economic and Legal share it.
    steps = [step("Physical", {"Physical": 0.5, "Soc": 0.4}), step(" harm", {" harm": 1.0}), step(END, {END: 1.0})]
    got = probabilities(labels, steps)
    assert math.isclose(got["Physical harm"], 0.5)
    assert math.isclose(got["Social harm"], 0.2) and math.isclose(got["Social bias"], 0.2)
    assert math.isclose(got["Economic harm"], 0.05) and math.isclose(got["Legal harm"], 0.05)
    assert math.isclose(sum(got.values()), 1.0)


def test_masked_tokens_are_ignored() -> None:
    steps = [("yes", 0.0, [("yes", 0.0), ("maybe", -math.inf), ("no", -9999.0)]), (END, 0.0, [(END, 0.0)])]
    got = probabilities(("yes", "no"), steps)
    assert math.isclose(got["yes"], 1.0) and got.get("no", 0.0) < 1e-300


def test_whole_labels_listed_as_single_tokens_are_read_exactly() -> None:
    # Our openai_server lists each label as one token and sends no end-of-turn step.
    steps = [step("No", {"No": 0.6, "Yes": 0.3, "Unsure": 0.1})]
    got = probabilities(("Yes", "No", "Unsure"), steps)
    assert math.isclose(got["No"], 0.6) and math.isclose(got["Yes"], 0.3) and math.isclose(got["Unsure"], 0.1)


def test_an_answer_cut_off_inside_a_label_is_unusable() -> None:
    assert label_logprobs(("Social harm", "Physical harm"), [step("Social", {"Social": 1.0})]) is None


# A random "model" over a character-level tokenizer: every label has one token path, every
# allowed token is listed, so the answer's probability must equal constrained decoding's exactly.

def exact_distribution(labels: list[str], weight) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """P(label) under decoding constrained to `labels`: product of renormalised conditionals."""
    def allowed(prefix: str) -> list[str]:
        nexts = sorted({label[len(prefix)] for label in labels if label.startswith(prefix) and len(label) > len(prefix)})
        return nexts + ([END] if prefix in labels else [])

    def conditional(prefix: str, token: str) -> float:
        options = allowed(prefix)
        return weight(prefix, token) / sum(weight(prefix, option) for option in options)

    result = {}
    for label in labels:
        p = math.prod(conditional(label[:i], label[i]) for i in range(len(label)))
        result[label] = p * conditional(label, END)
    return result


def greedy_steps(labels: list[str], weight) -> tuple[str, list]:  # type: ignore[no-untyped-def, type-arg]
    prefix, steps = "", []
    while True:
        nexts = sorted({label[len(prefix)] for label in labels if label.startswith(prefix) and len(label) > len(prefix)})
        options = nexts + ([END] if prefix in labels else [])
        total = sum(weight(prefix, option) for option in options)
        top = {option: weight(prefix, option) / total for option in options}
        token = max(options, key=lambda option: (top[option], option))
        steps.append(step(token, top))
        if token == END:
            return prefix, steps
        prefix += token


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=2, max_size=8, unique=True),
       seed=st.integers(0, 10_000))
def test_the_answer_probability_is_exact_and_the_distribution_sums_to_one(labels: list[str], seed: int) -> None:
    def weight(prefix: str, token: str) -> float:
        return 0.05 + random.Random(f"{seed}|{prefix}|{token}").random()

    answer, steps = greedy_steps(labels, weight)
    exact = exact_distribution(labels, weight)
    got = probabilities(tuple(labels), steps)
    assert math.isclose(sum(got.values()), 1.0, rel_tol=1e-9)
    assert math.isclose(got[answer], exact[answer], rel_tol=1e-9)
    best = max(exact, key=exact.__getitem__)
    if exact[best] > 0.5:  # a label that probable is what greedy decoding answers
        assert answer == best
