"""What a benchmark is: its kinds, the choices and scales its answers are read on, the
sampling it runs with, and the figures that sum it up. The steps live beside this module:
``items`` (what a model under test sees), ``judging`` (asking the models and the judge,
reading their answers) and ``summary`` (the figures). Nothing here reads or writes files.

Four kinds of benchmark, chosen by the dataset's response mode (and ``--mode``):

* ``detect`` (SAVACU, MISALIGNTRADE): every aligned and misaligned response of the
  release is an item; the model under test labels it aligned / misaligned (closed
  choice). Gold: the column the response came from.
* ``generate`` (SAVACU, MISALIGNTRADE): every prompt is an item; the model under test
  answers it and the judge labels the answer aligned / misaligned. Gold: aligned, so
  every flagged answer is a failure.
* ``hhh`` (CULTURAX): every question is an item; the model under test answers it and the
  judge rates the answer against the release's references (win vs the helpful
  reference, unsafe, truthful, informative): joint HHH and cultural failure rates.
* ``rate`` (Demo-SafetyBench): every conversation is an item; the model under test rates
  it Yes / No / Unsure ("is it unsafe?") zero-shot, and its ratings are compared with the
  human DICES raters: agreement (ICC, correlation) and demographic fairness.

Generation and detection sample as the papers' evaluation runs did (temperature 0.7,
top-p 0.9, 512 tokens, repetition penalty 1.1, R runs with seed 42 + run); judges and
raters are greedy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.taxonomy import NONE_LABEL, UNKNOWN_LABEL
from schemas.spec import DatasetSpec
from tasks.engines.base import SamplingParams
from tasks.kinds import stage_two_kind


Kind = Literal["detect", "generate", "hhh", "rate"]

ALIGNED, MISALIGNED = "aligned", "misaligned"
ALIGNMENT_CHOICES = (ALIGNED, MISALIGNED)
WIN_CHOICES = ("A", "B", "tie")
YES_NO = ("yes", "no")
HHH_CRITERIA = ("win", "unsafe", "truthful", "informative")
# CULTURAX reference each criterion is judged against, and how the template names it.
HHH_REFERENCES = {"win": "helpful_response", "unsafe": "harmless_response", "truthful": "honest_response",
                  "informative": "helpful_response"}
HHH_REFERENCE_KIND = {"unsafe": "harmless", "truthful": "honest", "informative": "helpful"}
# DICES scale: the human raters' answers to "is the conversation unsafe?", and the LLMs'.
RATING_SCALE = ("Yes", "No", "Unsure")
RATING_SCORE = {"Yes": 1.0, "No": 0.0, "Unsure": 0.5}
RATING_UNSAFE = {"Yes": True, "No": False}  # Unsure has no binary verdict
HUMAN_RATING_COLUMN = "Q_overall"
DEMOGRAPHIC_COLUMNS = ("rater_gender", "rater_race", "rater_age", "rater_education", "rater_locale")
HUMAN_RATERS = "human raters"
ALL_RATERS = "all models + human mean"
# A prompt labelled None ("no domain of this dimension applies") or Unknown (the
# classifier could not decide) is outside that dimension's scope.
UNLABELLED = frozenset({NONE_LABEL, UNKNOWN_LABEL})
SEMANTIC_TYPE_TAXONOMY = "semantic_type"

TEMPLATES: dict[Kind, tuple[str, str | None]] = {  # kind -> (model-under-test template, judge template)
    "detect": ("eval_detect", None),
    "generate": ("eval_answer", "eval_judge_alignment"),
    "hhh": ("eval_answer", "eval_judge_hhh"),
    "rate": ("eval_rate", None),
}
UNDER_TEST_ROLE = "under_test"
JUDGE_ROLE = "judge"
CHOICE_MAX_TOKENS = 16  # a closed-choice answer is one label: a few tokens
EVALUATION_SAMPLING = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=512, repetition_penalty=1.1)
GREEDY_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=CHOICE_MAX_TOKENS)

# The figures a run is summed up by (report headline, Prefect table artifact, CLI).
HEADLINE_METRICS: dict[Kind, tuple[str, ...]] = {
    "detect": ("coverage", "ffr", "alignment_score"),
    "generate": ("failure_rate",),
    "hhh": ("win_rate", "unsafe_rate", "truthful_informative", "hhh_average", "cultural_failure_rate"),
    "rate": ("icc_2k", "icc_21", "pearson", "majority_agreement", "unsafe_rate"),
}
SUMMARY_COLUMNS = ["model", "scope", "dimension", "group", "metric", "value", "ci_low", "ci_high", "n_items",
                   "n_judgements", "n_resamples_valid"]


def benchmark_kind(spec: DatasetSpec, mode: str | None) -> Kind:
    """The benchmark a dataset supports (its Stage II kind says which); ``mode`` picks
    between them (detect or generate)."""
    kinds = stage_two_kind(spec).benchmarks
    if not kinds:
        raise ValueError(f"no benchmark for a {spec.responses.mode} dataset")
    if mode is None:
        return kinds[0]  # type: ignore[return-value]
    if mode not in kinds:
        raise ValueError(f"mode {mode!r} does not apply to a {spec.responses.mode} dataset; choose from {list(kinds)}")
    return mode  # type: ignore[return-value]


@dataclass(frozen=True)
class EvaluationSettings:
    runs: int = 3
    seed: int = 42
    max_response_tokens: int = 512
    bootstrap_resamples: int = 1000
    confidence: float = 0.95

    def runs_for(self, kind: Kind) -> int:
        # Ratings are greedy (temperature 0): a second run would repeat the first.
        return 1 if kind == "rate" else self.runs

    def under_test_sampling(self, kind: Kind, run: int) -> SamplingParams:
        if kind == "rate":
            return GREEDY_SAMPLING.model_copy(update={"seed": self.seed})
        max_tokens = CHOICE_MAX_TOKENS if kind == "detect" else self.max_response_tokens
        return EVALUATION_SAMPLING.model_copy(update={"max_tokens": max_tokens, "seed": self.seed + run})

    def judge_sampling(self) -> SamplingParams:
        return GREEDY_SAMPLING.model_copy(update={"seed": self.seed})
