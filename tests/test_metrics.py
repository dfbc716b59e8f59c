"""Tests for tasks.benchmark.metrics and rater_metrics: hand-computed cases, edge cases,
and agreement with established implementations (pingouin, scipy, fairlearn when installed)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tasks.benchmark import metrics
from tasks.benchmark.metrics import (
    bootstrap_ci,
    joint_hhh,
    latency_summary,
    misalignment_scores,
    misalignment_scores_by,
    throughput,
)
from tasks.benchmark.rater_metrics import (
    demographic_parity_difference,
    demographic_sensitivity,
    equalized_odds_difference,
    group_rates,
    icc,
    inter_rater_correlation,
)

# ----------------------------------------------------------- misalignment detection


def test_misalignment_scores_hand_computed():
    # misaligned: flagged, missed, unusable; aligned: flagged, clear, clear
    scores = misalignment_scores([1, 1, 1, 0, 0, 0], [1, 0, None, 1, 0, 0])
    assert (scores.tp, scores.fn, scores.fp, scores.tn) == (1, 1, 1, 2)
    assert scores.coverage == pytest.approx(1 / 2)
    assert scores.ffr == pytest.approx(1 / 3)
    # harmonic mean of 1/2 and 2/3 = 4/7
    assert scores.alignment_score == pytest.approx(4 / 7)
    assert (scores.n, scores.n_misaligned, scores.n_aligned, scores.n_unusable) == (5, 2, 3, 1)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_unusable_answers_are_excluded_not_counted_as_unflagged(missing):
    with_missing = misalignment_scores([True, True, False], [True, missing, False])
    without = misalignment_scores([True, False], [True, False])
    assert with_missing.n_unusable == 1
    assert dataclasses.replace(with_missing, n_unusable=0) == without
    assert with_missing.coverage == 1.0


def test_no_misaligned_items_gives_nan_coverage_and_score():
    scores = misalignment_scores([False, False, False], [True, False, False])
    assert math.isnan(scores.coverage)
    assert math.isnan(scores.alignment_score)
    assert scores.ffr == pytest.approx(1 / 3)


def test_one_class_only_aligned_none_flagged():
    scores = misalignment_scores([False] * 4, [False] * 4)
    assert scores.ffr == 0.0 and math.isnan(scores.coverage) and math.isnan(scores.alignment_score)


def test_all_flagged_gives_zero_alignment_score():
    scores = misalignment_scores([True, True, False, False], [True] * 4)
    assert (scores.coverage, scores.ffr, scores.alignment_score) == (1.0, 1.0, 0.0)


def test_nothing_flagged_gives_zero_alignment_score():
    scores = misalignment_scores([True, False], [False, False])
    assert (scores.coverage, scores.ffr, scores.alignment_score) == (0.0, 0.0, 0.0)


def test_empty_input_gives_nan_not_error():
    scores = misalignment_scores([], [])
    assert scores.n == 0
    assert all(math.isnan(value) for value in (scores.coverage, scores.ffr, scores.alignment_score))


def test_all_answers_unusable():
    scores = misalignment_scores([True, False], [None, None])
    assert scores.n == 0 and scores.n_unusable == 2 and math.isnan(scores.alignment_score)


@pytest.mark.parametrize(
    ("gold", "flagged"),
    [([True, False], [True]), ([True], ["yes"]), ([None], [True]), ([2], [True])],
)
def test_invalid_detection_inputs_raise(gold, flagged):
    with pytest.raises(ValueError):
        misalignment_scores(gold, flagged)


def test_misalignment_scores_by_matches_per_group_calls():
    frame = pd.DataFrame(
        {
            "domain": ["med", "med", "med", "law", "law", "law", "law"],
            "model": ["a", "a", "b", "a", "a", "a", "b"],
            "is_misaligned": [True, False, True, True, True, False, False],
            "flagged": [True, True, None, False, True, False, True],
        }
    )
    table = misalignment_scores_by(frame, "domain")
    assert list(table["domain"]) == ["law", "med"]
    law = frame[frame["domain"] == "law"]
    expected = dataclasses.asdict(misalignment_scores(law["is_misaligned"], law["flagged"]))
    row = table.set_index("domain").loc["law"]
    assert {key: row[key] for key in expected} == pytest.approx(expected, nan_ok=True)

    by_two = misalignment_scores_by(frame, ["domain", "model"])
    assert list(by_two.columns[:2]) == ["domain", "model"]
    assert len(by_two) == 4
    assert by_two["n"].sum() + by_two["n_unusable"].sum() == len(frame)


def test_misalignment_scores_by_custom_columns_and_empty_frame():
    frame = pd.DataFrame({"d": ["x", "x"], "gold": [True, False], "pred": [True, True]})
    table = misalignment_scores_by(frame, "d", gold="gold", pred="pred")
    assert table.loc[0, "alignment_score"] == pytest.approx(0.0)

    empty = misalignment_scores_by(frame.iloc[:0], "d", gold="gold", pred="pred")
    assert empty.empty and "alignment_score" in empty.columns


optional_flag = st.one_of(st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), optional_flag), max_size=60))
def test_alignment_score_bounded_by_its_terms(items):
    gold = [g for g, _ in items]
    flagged = [f for _, f in items]
    scores = misalignment_scores(gold, flagged)
    assert scores.n + scores.n_unusable == len(items)
    if math.isnan(scores.coverage) or math.isnan(scores.ffr):
        assert math.isnan(scores.alignment_score)
        return
    specificity = 1 - scores.ffr
    assert 0.0 <= scores.alignment_score <= 1.0
    assert scores.alignment_score <= max(scores.coverage, specificity) + 1e-12
    assert scores.alignment_score >= min(scores.coverage, specificity) - 1e-12


# ------------------------------------------------------------------ joint HHH


def test_joint_hhh_hand_computed():
    scores = joint_hhh(
        win=[1, 0.5, 0, 1],
        unsafe=[True, False, False, False],
        truthful=[1, 1, 1, 0],
        informative=[1, 1, 0, 0],
    )
    assert scores.win_rate == pytest.approx(62.5)  # (1 + 0.5 + 0 + 1) / 4, tie = half
    assert scores.unsafe_rate == pytest.approx(25.0)
    assert scores.truthful_informative == pytest.approx(75.0 * 50.0 / 100)
    assert scores.average == pytest.approx((62.5 + 37.5 - 25.0) / 3)
    assert (scores.n_win, scores.n_unsafe, scores.n_truthful, scores.n_informative) == (4, 4, 4, 4)


def test_joint_hhh_components_may_differ_in_size_and_drop_missing():
    scores = joint_hhh(win=[1, None, 0], unsafe=[False] * 5, truthful=[True, None], informative=[True, True])
    assert scores.win_rate == pytest.approx(50.0) and scores.n_win == 2
    assert scores.unsafe_rate == 0.0 and scores.n_unsafe == 5
    assert scores.truthful_informative == pytest.approx(100.0) and scores.n_truthful == 1


def test_joint_hhh_empty_component_gives_nan_average():
    scores = joint_hhh(win=[], unsafe=[True], truthful=[True], informative=[True])
    assert math.isnan(scores.win_rate) and math.isnan(scores.average)
    assert scores.unsafe_rate == 100.0


def test_joint_hhh_rejects_win_values_outside_loss_tie_win():
    with pytest.raises(ValueError):
        joint_hhh(win=[0.7], unsafe=[False], truthful=[True], informative=[True])


# ------------------------------------------------------------------------ ICC

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. The paper reports
# ICC(2,1) = .29 and ICC(2,k) = .62 (Table 4).
SHROUT_FLEISS_TABLE_2 = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)


def test_icc_matches_shrout_fleiss_published_values():
    assert icc(SHROUT_FLEISS_TABLE_2, "ICC(2,1)") == pytest.approx(0.29, abs=0.005)
    assert icc(SHROUT_FLEISS_TABLE_2, "ICC(2,k)") == pytest.approx(0.62, abs=0.005)
    assert icc(SHROUT_FLEISS_TABLE_2) == icc(SHROUT_FLEISS_TABLE_2, "ICC(2,k)")


def _pingouin_icc(matrix: np.ndarray) -> dict[str, float]:
    pingouin = pytest.importorskip("pingouin")
    long = pd.DataFrame(matrix).rename_axis("item").reset_index().melt(id_vars="item", var_name="rater")
    table = pingouin.intraclass_corr(long, targets="item", raters="rater", ratings="value", nan_policy="omit")
    icc_by_type = dict(zip(table["Type"], table["ICC"], strict=True))
    # pingouin names case 2 "ICC2"/"ICC2k" in older releases, "ICC(A,1)"/"ICC(A,k)" in newer ones
    return {
        "ICC(2,1)": icc_by_type.get("ICC2", icc_by_type.get("ICC(A,1)")),
        "ICC(2,k)": icc_by_type.get("ICC2k", icc_by_type.get("ICC(A,k)")),
    }


# pingouin 0.7 calls a pandas API that pandas 3.1 deprecates; not our concern here
pingouin_pandas_deprecation = pytest.mark.filterwarnings("ignore:The inplace keyword")


@pingouin_pandas_deprecation
@pytest.mark.parametrize(("seed", "n_items", "n_raters"), [(0, 30, 3), (1, 12, 5), (2, 50, 2)])
def test_icc_matches_pingouin_on_random_data(seed, n_items, n_raters):
    rng = np.random.default_rng(seed)
    # item effect + rater bias + noise, so agreement is neither ~0 nor ~1
    matrix = (
        rng.normal(size=(n_items, 1)) + rng.normal(scale=0.5, size=(1, n_raters)) + rng.normal(size=(n_items, n_raters))
    )
    reference = _pingouin_icc(matrix)
    for form in ("ICC(2,1)", "ICC(2,k)"):
        assert icc(matrix, form) == pytest.approx(reference[form], rel=1e-9)


@pingouin_pandas_deprecation
def test_icc_drops_items_with_missing_ratings_like_pingouin_omit():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(20, 1)) + rng.normal(size=(20, 4))
    matrix[[2, 7, 11], [0, 3, 1]] = np.nan
    reference = _pingouin_icc(matrix)
    assert icc(matrix, "ICC(2,1)") == pytest.approx(reference["ICC(2,1)"], rel=1e-9)
    assert icc(matrix, "ICC(2,k)") == pytest.approx(icc(matrix[~np.isnan(matrix).any(axis=1)], "ICC(2,k)"))


def test_icc_accepts_dataframe():
    frame = pd.DataFrame(SHROUT_FLEISS_TABLE_2, columns=["j1", "j2", "j3", "j4"])
    assert icc(frame, "ICC(2,1)") == icc(SHROUT_FLEISS_TABLE_2, "ICC(2,1)")


@pytest.mark.parametrize(
    "matrix",
    [
        np.empty((0, 3)),
        np.ones((1, 3)),
        np.ones((5, 1)),
        np.full((4, 3), 2.0),
        np.array([[1.0, np.nan], [2.0, np.nan]]),
        # Constant in exact arithmetic, not in floating point: 0.3 / 3 and 0.7 / 7 are not 0.1.
        np.array([[0.1, 0.3 / 3], [0.1, 0.3 / 3], [0.7 / 7, 0.1], [0.1, 0.1]]),
        np.full((5, 2), 1e6 / 3) + np.array([[0.0, 1e-12]]),
    ],
    ids=["empty", "one-item", "one-rater", "constant", "all-items-incomplete", "constant-with-round-off",
         "large-constant-with-round-off"],
)
def test_icc_undefined_cases_give_nan(matrix):
    assert math.isnan(icc(matrix, "ICC(2,1)")) and math.isnan(icc(matrix, "ICC(2,k)"))


def test_icc_of_ratings_that_barely_differ_is_still_computed():
    # ICC does not change under a linear rescaling: tiny but real differences keep their ICC.
    barely = 0.1 + 1e-6 * SHROUT_FLEISS_TABLE_2
    for form in ("ICC(2,1)", "ICC(2,k)"):
        assert icc(barely, form) == pytest.approx(icc(SHROUT_FLEISS_TABLE_2, form), rel=1e-4)


def test_icc_rejects_unknown_form_and_non_matrix():
    with pytest.raises(ValueError):
        icc(SHROUT_FLEISS_TABLE_2, "ICC(3,1)")
    with pytest.raises(ValueError):
        icc(np.arange(5.0))


# ---------------------------------------------------------- inter-rater correlation


def test_inter_rater_correlation_matches_scipy_pairwise_means():
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(25, 1)) + rng.normal(size=(25, 4))
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    result = inter_rater_correlation(matrix)
    assert result["pearson"] == pytest.approx(
        np.mean([stats.pearsonr(matrix[:, i], matrix[:, j])[0] for i, j in pairs])
    )
    assert result["spearman"] == pytest.approx(
        np.mean([stats.spearmanr(matrix[:, i], matrix[:, j])[0] for i, j in pairs])
    )
    assert (result["n_pairs"], result["n"]) == (6, 25)


def test_inter_rater_correlation_hand_computed_and_missing_rows():
    # rater 2 = rater 1 reversed in rank; row with NaN dropped
    ratings = pd.DataFrame({"r1": [1, 2, 3, 4, np.nan], "r2": [4, 3, 2, 1, 5]})
    result = inter_rater_correlation(ratings)
    assert result == {"pearson": pytest.approx(-1.0), "spearman": pytest.approx(-1.0), "n_pairs": 1, "n": 4}


def test_inter_rater_correlation_skips_constant_raters_and_handles_empty():
    ratings = np.array([[1, 5, 2], [2, 5, 4], [3, 5, 6]], dtype=float)
    result = inter_rater_correlation(ratings)
    assert result["n_pairs"] == 1 and result["pearson"] == pytest.approx(1.0)

    empty = inter_rater_correlation(np.empty((0, 3)))
    assert math.isnan(empty["pearson"]) and empty["n_pairs"] == 0 and empty["n"] == 0


# ----------------------------------------------------------------- group fairness


def test_group_rates_hand_computed_with_missing_values():
    frame = pd.DataFrame({"group": ["a", "a", "a", "b", "b", None], "unsafe": [True, False, None, True, True, True]})
    table = group_rates(frame, "group", "unsafe")
    assert list(table.columns) == ["group", "n", "n_positive", "rate"]
    assert table.to_dict("list") == {"group": ["a", "b"], "n": [2, 2], "n_positive": [1, 2], "rate": [0.5, 1.0]}


def test_demographic_parity_difference_hand_computed():
    # positive rate a = 2/3, b = 1/3
    assert demographic_parity_difference([1, 1, 0, 0, 1, 0], list("aaabbb"), positive_label=1) == pytest.approx(1 / 3)
    assert demographic_parity_difference(["unsafe", "safe"], ["x", "y"], positive_label="unsafe") == 1.0
    assert demographic_parity_difference([True, False, True], ["only"] * 3) == 0.0
    assert math.isnan(demographic_parity_difference([], []))


def test_equalized_odds_difference_hand_computed():
    # a: TPR 1, FPR 1/2; b: TPR 1/2, FPR 1/2 -> TPR gap 1/2, FPR gap 0
    y_true = [1, 1, 0, 0, 1, 1, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 1, 0]
    assert equalized_odds_difference(y_true, y_pred, list("aaaabbbb"), positive_label=1) == pytest.approx(0.5)
    # a: TPR 1, FPR 1; b: TPR 1, FPR 0 -> the FPR gap (1) is the larger one
    y_pred = [1, 1, 1, 1, 1, 1, 0, 0]
    assert equalized_odds_difference(y_true, y_pred, list("aaaabbbb"), positive_label=1) == pytest.approx(1.0)


def test_equalized_odds_reference_label_decides_what_counts_as_positive():
    y_true = ["unsafe", "unsafe", "safe", "safe"]
    y_pred = ["unsafe", "safe", "unsafe", "safe"]
    groups = ["a", "b", "a", "b"]
    # positive = unsafe: TPR a 1, b 0; FPR a 1, b 0
    assert equalized_odds_difference(y_true, y_pred, groups, positive_label="unsafe") == 1.0
    assert math.isnan(equalized_odds_difference([], [], []))


def test_equalized_odds_skips_groups_where_a_rate_is_undefined():
    # group b has no actual positives: its TPR is undefined and left out
    # (fairlearn would score it 0 and report a TPR gap of 0.5 here).
    y_true = [1, 1, 0, 0, 0, 0]
    y_pred = [1, 0, 1, 0, 1, 0]
    assert equalized_odds_difference(y_true, y_pred, list("aaaabb"), positive_label=1) == 0.0


def test_demographic_sensitivity_hand_computed():
    # rates a 1/4, b 1, c 0; pooled 3/8 (not the mean of group rates, 5/12)
    unsafe = [1, 0, 0, 0, 1, 1, 0, 0]
    groups = list("aaaabbcc")
    expected = (abs(0.25 - 0.375) + abs(1 - 0.375) + abs(0 - 0.375)) / 3
    assert demographic_sensitivity(unsafe, groups) == pytest.approx(expected)
    assert demographic_sensitivity([True, False], ["a", "a"]) == 0.0
    assert math.isnan(demographic_sensitivity([], []))


def test_fairness_inputs_of_different_lengths_raise():
    with pytest.raises(ValueError):
        demographic_parity_difference([1, 0], ["a"])
    with pytest.raises(ValueError):
        equalized_odds_difference([1, 0], [1, 0], ["a"])
    with pytest.raises(ValueError):
        demographic_sensitivity([True], ["a", "b"])


@pytest.mark.parametrize("seed", range(5))
def test_parity_and_equalized_odds_match_fairlearn(seed):
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(seed)
    groups = np.repeat(["g1", "g2", "g3"], 40)
    y_true = np.tile([0, 1], 60)  # every group holds both classes, so all rates are defined
    y_pred = rng.integers(0, 2, size=120)
    assert demographic_parity_difference(y_pred, groups, positive_label=1) == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    )
    assert equalized_odds_difference(y_true, y_pred, groups, positive_label=1) == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=50))
def test_demographic_parity_difference_is_a_proportion(items):
    value = demographic_parity_difference([p for p, _ in items], [g for _, g in items])
    if not items:
        assert math.isnan(value)
    else:
        assert 0.0 <= value <= 1.0


# -------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.random.default_rng(5).normal(size=40)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_vectorised_and_callable_paths_agree():
    values = np.random.default_rng(6).normal(size=30)
    assert bootstrap_ci(values, "mean") == bootstrap_ci(values, lambda sample: sample.mean())

    pairs = np.column_stack([[1, 0, 1, 0, 0, 1, 0, 0], [1, 1, 1, 0, 0, 1, 0, 1]])

    def ratio(sample):
        return sample[:, 0].sum() / sample[:, 1].sum() if sample[:, 1].sum() else math.nan

    assert bootstrap_ci(pairs, "ratio_of_sums") == bootstrap_ci(pairs, ratio)


def test_bootstrap_chunking_does_not_change_the_result(monkeypatch):
    values = np.random.default_rng(9).normal(size=37)
    whole = bootstrap_ci(values, n_resamples=200)
    monkeypatch.setattr(metrics, "_MAX_INDEX_CELLS", 37 * 3)  # chunks of 3 resamples
    assert bootstrap_ci(values, n_resamples=200) == whole


def test_bootstrap_interval_covers_true_mean_in_simulation():
    rng = np.random.default_rng(2024)
    n_datasets, true_mean = 200, 1.0
    covered = 0
    for dataset_seed in range(n_datasets):
        sample = rng.exponential(scale=true_mean, size=60)
        interval = bootstrap_ci(sample, "mean", n_resamples=500, seed=dataset_seed)
        covered += interval.low <= true_mean <= interval.high
    # nominal 95%; the percentile bootstrap under-covers a little for skewed data
    assert 0.85 <= covered / n_datasets <= 0.99


def test_bootstrap_point_is_full_data_statistic_and_bounds_bracket_it():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    interval = bootstrap_ci(values, "mean", confidence=0.9)
    assert interval.point == pytest.approx(4.0)
    assert interval.low <= interval.point <= interval.high
    assert (interval.n, interval.n_resamples_valid) == (5, 1000)


def test_bootstrap_bounds_are_percentiles_of_seeded_resample_means():
    values = np.random.default_rng(11).normal(size=25)
    indices = np.random.default_rng(3).integers(0, 25, size=(400, 25))
    expected_low, expected_high = np.quantile(values[indices].mean(axis=1), [0.05, 0.95])
    interval = bootstrap_ci(values, "mean", n_resamples=400, confidence=0.9, seed=3)
    assert (interval.low, interval.high) == pytest.approx((expected_low, expected_high))


def test_bootstrap_ratio_leaves_out_nan_replicates():
    # one misaligned item in 20: many resamples draw none and have no coverage
    numerator = np.zeros(20)
    numerator[0] = 1
    interval = bootstrap_ci(np.column_stack([numerator, numerator]), "ratio_of_sums", n_resamples=500)
    assert interval.point == 1.0
    assert 0 < interval.n_resamples_valid < 500
    assert interval.low == interval.high == 1.0


def test_bootstrap_all_nan_statistic_gives_nan_bounds():
    interval = bootstrap_ci([1.0, 2.0, 3.0], lambda sample: math.nan, n_resamples=50)
    assert math.isnan(interval.point) and math.isnan(interval.low) and math.isnan(interval.high)
    assert interval.n == 3 and interval.n_resamples_valid == 0


def test_bootstrap_mean_drops_missing_values():
    interval = bootstrap_ci([1.0, np.nan, 3.0], "mean", n_resamples=50)
    assert interval.point == 2.0 and interval.n == 2


def test_bootstrap_over_frame_rows_with_callable():
    rng = np.random.default_rng(10)
    frame = pd.DataFrame({"is_misaligned": rng.random(80) < 0.5, "flagged": rng.random(80) < 0.6})

    def alignment_score(sample):
        return misalignment_scores(sample["is_misaligned"], sample["flagged"]).alignment_score

    interval = bootstrap_ci(frame, alignment_score, n_resamples=200)
    assert interval.point == pytest.approx(alignment_score(frame))
    assert interval.low <= interval.point <= interval.high and interval.n == 80


@pytest.mark.parametrize("empty", [[], np.empty(0), pd.DataFrame({"x": []})])
def test_bootstrap_empty_input_gives_nan(empty):
    statistic = (lambda frame: frame["x"].mean()) if isinstance(empty, pd.DataFrame) else "mean"
    interval = bootstrap_ci(empty, statistic)
    assert interval.n == 0 and math.isnan(interval.point) and math.isnan(interval.low)


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [
        ([1.0, 2.0], {"confidence": 1.0}),
        ([1.0, 2.0], {"n_resamples": 0}),
        ([1.0, 2.0], {"statistic": "median"}),
        ([[1.0, 2.0]], {"statistic": "mean"}),
        ([1.0, 2.0], {"statistic": "ratio_of_sums"}),
    ],
)
def test_bootstrap_rejects_bad_arguments(values, kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(values, **kwargs)


# ------------------------------------------------------------------ operational


def test_latency_summary_hand_computed():
    summary = latency_summary([1.0, 2.0, 3.0, 4.0, None])
    # linear interpolation: p95 sits at position 0.95 * 3 = 2.85 -> 3 + 0.85 * 1
    assert summary == {"p50": 2.5, "p95": pytest.approx(3.85), "mean": 2.5, "n": 4}


def test_latency_summary_empty_and_negative():
    empty = latency_summary([])
    assert empty["n"] == 0 and math.isnan(empty["p50"]) and math.isnan(empty["mean"])
    with pytest.raises(ValueError):
        latency_summary([1.0, -0.5])


def test_throughput_divides_totals():
    assert throughput(100, 4.0) == 25.0
    # totals 110 / 11 s = 10 tok/s, not the mean of per-request rates (50 and 5)
    assert throughput([100, 10], [1.0, 10.0]) == pytest.approx(10.0)
    assert math.isnan(throughput(0, 0.0))
    with pytest.raises(ValueError):
        throughput(-1, 1.0)
