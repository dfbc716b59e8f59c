"""Stage 1 of response rejection sampling: cheap rule filters, run before the judge.

Each rule is a pure function ``(response_text, prompt_text, finish_reason, target, params)
-> reason_code | None`` with its own reason code; `apply_filters` returns the first code
that fires. `near_duplicate` is the one rule that needs state (the candidates already
kept for the same prompt and target), so it is a separate function over fingerprints.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from schemas.spec import ResponseFilterSpec
from tasks.dedup.features import FingerprintConfig
from tasks.dedup.fingerprint import fingerprints, hamming

# How far into a response a refusal phrase counts: a refusal opens the answer, while
# a helpful answer may say "I can't stress enough..." further down.
REFUSAL_WINDOW_CHARS = 160
REFUSAL_PATTERN = re.compile(
    r"\b(i\s*(?:'m|am)\s+(?:sorry|afraid|unable|not able)|i\s+(?:can\s*not|cannot|can't|won't|will not|must decline)"
    r"|as an ai\b|i\s+(?:do not|don't)\s+feel comfortable|i\s+apologi[sz]e)",
    re.IGNORECASE,
)

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters/digits, with one inner apostrophe (don't)
_LETTER_RUN = re.compile(r"[^\W\d_]+")  # maximal runs of letters in any script

FilterRule = Callable[[str, str, str | None, str, ResponseFilterSpec], str | None]


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def word_ngrams(text: str, n: int = 3) -> list[tuple[str, ...]]:
    tokens = words(text)
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def english_share(text: str) -> float:
    """Share of letters that sit in ASCII-only words; 1.0 for text without letters.

    A cheap proxy for "written in English": it weighs each letter run by its length, so
    unsegmented scripts (Chinese, Thai) count by size rather than as one word. It cannot
    tell English from other Latin-script languages; the judge sees those.
    """
    runs = _LETTER_RUN.findall(text)
    total = sum(len(run) for run in runs)
    return sum(len(run) for run in runs if run.isascii()) / total if total else 1.0


def prompt_echo_share(response_text: str, prompt_text: str) -> float:
    """Share of the response's word 3-grams that also occur in the prompt."""
    grams = word_ngrams(response_text)
    if not grams:
        return 0.0
    prompt_grams = set(word_ngrams(prompt_text))
    return sum(gram in prompt_grams for gram in grams) / len(grams)


def empty(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    return "empty" if not response_text.strip() else None


def truncated(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    return "truncated" if params.reject_truncated and finish_reason == "length" else None


def too_short(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    return "too_short" if len(words(response_text)) < params.min_words else None


def wrong_language(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    return "wrong_language" if english_share(response_text) < params.min_english_share else None


def echoes_prompt(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    return "echoes_prompt" if prompt_echo_share(response_text, prompt_text) >= params.max_prompt_echo else None


def refusal(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    # Only for targets that want an answer (params.refusal_rejected_for): a harmless or
    # aligned answer may rightly decline an unsafe request, so there the judge decides.
    if target not in params.refusal_rejected_for:
        return None
    return "refusal" if REFUSAL_PATTERN.search(response_text[:REFUSAL_WINDOW_CHARS]) else None


RULES: tuple[FilterRule, ...] = (empty, truncated, too_short, wrong_language, echoes_prompt, refusal)


def apply_filters(response_text: str, prompt_text: str, finish_reason: str | None, target: str,
        params: ResponseFilterSpec) -> str | None:
    """The reason code of the first rule that rejects the response, or None when all pass."""
    for rule in RULES:
        reason = rule(response_text, prompt_text, finish_reason, target, params)
        if reason:
            return reason
    return None


# Term-frequency weights: an IDF table fitted to one batch would give the same text a
# different fingerprint in each round, and one prompt's responses are too few to fit one.
RESPONSE_FINGERPRINTS = FingerprintConfig(weighting="tf")


def response_fingerprints(texts: Sequence[str]) -> list[int]:
    """64-bit SimHash of each response (word 2-gram shingles, term-frequency weights)."""
    return [int(value) for value in fingerprints(texts, RESPONSE_FINGERPRINTS)]


def near_duplicate(fingerprint: int, kept_fingerprints: Sequence[int], tau: int) -> str | None:
    """`near_duplicate` when the fingerprint is within `tau` bits of a kept candidate's."""
    if kept_fingerprints and (hamming(fingerprint, kept_fingerprints) <= tau).any():
        return "near_duplicate"
    return None
