"""Stage 1 rule filters: each rule fires on its case and stays quiet otherwise."""

from __future__ import annotations

import pytest

from schemas.spec import ResponseFilterSpec
from tasks.stage2.filters import (
    apply_filters,
    echoes_prompt,
    empty,
    english_share,
    near_duplicate,
    refusal,
    response_fingerprints,
    too_short,
    truncated,
    wrong_language,
)

PARAMS = ResponseFilterSpec(min_words=3, max_prompt_echo=0.8, min_english_share=0.6, near_duplicate_tau=3)
PROMPT = "What is the history of the Holi festival in northern India?"
GOOD = "Holi marks the arrival of spring; people throw coloured powder and share sweets with neighbours."


def check(rule, text, finish_reason="stop", target="helpful", prompt=PROMPT, params=PARAMS):
    return rule(text, prompt, finish_reason, target, params)


@pytest.mark.parametrize("rule, rejected, accepted, code", [
    (empty, "  \n\t ", GOOD, "empty"),
    (too_short, "Yes, spring.", GOOD, "too_short"),
    (wrong_language, "霍丽节是印度的春天节日，人们互相泼洒彩色粉末。", GOOD, "wrong_language"),
    (echoes_prompt, "What is the history of the Holi festival in northern India?", GOOD, "echoes_prompt"),
    (refusal, "I'm sorry, but I can't help with that request.", GOOD, "refusal"),
])
def test_text_rules_fire_on_their_case_only(rule, rejected, accepted, code):
    assert check(rule, rejected) == code
    assert check(rule, accepted) is None


def test_truncated_reads_the_finish_reason():
    assert check(truncated, GOOD, finish_reason="length") == "truncated"
    assert check(truncated, GOOD, finish_reason="stop") is None


def test_english_share_weighs_letters_not_words():
    assert english_share("Hello 你好世界很长的句子") < 0.5  # one long CJK run outweighs one English word
    assert english_share("Holi, Diwali and Eid: 3 festivals!") == 1.0
    assert english_share("1234 ...") == 1.0  # nothing to judge


def test_echo_counts_copied_trigrams_only():
    partly_copied = "The history of the Holi festival is long; it celebrates spring, love and the victory of good."
    assert check(echoes_prompt, partly_copied) is None
    assert check(echoes_prompt, "Holi festival") is None  # no 3-grams: too_short's business


def test_refusal_depends_on_target_and_position():
    refusal_text = "I cannot assist with that, but here is a safer idea: visit a local Holi celebration."
    assert check(refusal, refusal_text, target="helpful") == "refusal"
    assert check(refusal, refusal_text, target="misaligned") == "refusal"
    assert check(refusal, refusal_text, target="harmless") is None  # a polite refusal may be the harmless answer
    assert check(refusal, refusal_text, target="aligned") is None
    late = GOOD + " " * 200 + "I can't stress enough how colourful it is."
    assert check(refusal, late) is None  # only the opening counts


def test_refusal_targets_are_configurable():
    params = ResponseFilterSpec(refusal_rejected_for=("harmless",))
    assert check(refusal, "As an AI, I won't answer that.", target="harmless", params=params) == "refusal"
    assert check(refusal, "As an AI, I won't answer that.", target="helpful", params=params) is None


def test_apply_filters_returns_first_failing_reason():
    assert apply_filters("", PROMPT, "length", "helpful", PARAMS) == "empty"
    assert apply_filters("Too short", PROMPT, "length", "helpful", PARAMS) == "truncated"
    assert apply_filters("I'm sorry, I cannot help with festivals today.", PROMPT, "stop", "helpful", PARAMS) == "refusal"
    assert apply_filters(GOOD, PROMPT, "stop", "helpful", PARAMS) is None


def test_near_duplicate_against_kept_candidates():
    original, reworded, other = response_fingerprints([
        GOOD, GOOD.replace("Holi", "holi").rstrip(".") + "!",
        "Diwali is the festival of lights, celebrated with lamps, sweets and fireworks.",
    ])
    assert near_duplicate(reworded, [original], tau=3) == "near_duplicate"  # case and punctuation only
    assert near_duplicate(other, [original], tau=3) is None
    assert near_duplicate(original, [], tau=3) is None
