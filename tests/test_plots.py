"""Tests for tasks.benchmark.plots: each helper writes a valid PNG and refuses empty input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.benchmark.rater_metrics import group_rates
from tasks.benchmark.plots import dimension_tradeoff, group_rates_plot, per_domain_bars

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture
def domain_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "domain": ["medicine", "law", "finance"],
            "alignment_score": [0.71, 0.55, np.nan],
            "low": [0.65, 0.48, np.nan],
            "high": [0.77, 0.61, np.nan],
        }
    )


@pytest.fixture
def dimension_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dimension": ["honesty", "harmlessness", "helpfulness"],
            "coverage": [0.8, 0.4, 0.65],
            "ffr": [0.3, 0.05, 0.2],
            "alignment_score": [0.74, 0.56, 0.71],
        }
    )


@pytest.fixture
def rates_frame() -> pd.DataFrame:
    items = pd.DataFrame({"gender": list("aabbbc"), "unsafe": [True, False, True, True, False, False]})
    return group_rates(items, "gender", "unsafe")


def test_per_domain_bars_writes_png(tmp_path, domain_frame):
    path = per_domain_bars(domain_frame, "alignment_score", "domain", "AS by domain", tmp_path / "bars.png")
    assert path == tmp_path / "bars.png"
    assert_png(path)


def test_per_domain_bars_with_confidence_intervals_and_new_folder(tmp_path, domain_frame):
    path = per_domain_bars(
        domain_frame, "alignment_score", "domain", "AS", str(tmp_path / "nested" / "ci.png"), ci_cols=("low", "high")
    )
    assert_png(path)


def test_dimension_tradeoff_writes_png(tmp_path, dimension_frame):
    assert_png(dimension_tradeoff(dimension_frame, tmp_path / "tradeoff.png"))


def test_group_rates_plot_writes_png_from_group_rates_output(tmp_path, rates_frame):
    assert_png(group_rates_plot(rates_frame, tmp_path / "groups.png"))
    assert_png(group_rates_plot(rates_frame, tmp_path / "groups_named.png", group_col="gender", title="Unsafe"))


@pytest.mark.parametrize(
    "draw",
    [
        lambda frame, path: per_domain_bars(frame, "alignment_score", "domain", "t", path),
        dimension_tradeoff,
        group_rates_plot,
    ],
    ids=["per_domain_bars", "dimension_tradeoff", "group_rates_plot"],
)
def test_empty_frames_raise_clear_value_error(tmp_path, draw):
    empty = pd.DataFrame(
        columns=["domain", "alignment_score", "dimension", "coverage", "ffr", "n", "n_positive", "rate"]
    )
    with pytest.raises(ValueError, match="empty"):
        draw(empty, tmp_path / "never.png")
    with pytest.raises(ValueError, match="empty"):
        draw(pd.DataFrame(), tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_missing_columns_raise_value_error(tmp_path, dimension_frame, domain_frame):
    with pytest.raises(ValueError, match="missing column"):
        dimension_tradeoff(dimension_frame.drop(columns="ffr"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="missing column"):
        per_domain_bars(domain_frame, "coverage", "domain", "t", tmp_path / "x.png")
