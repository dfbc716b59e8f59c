"""Plotting helpers for benchmark reports: each writes one PNG and returns its path.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing
needs a display, no global backend is switched and no figure is left open in a
pyplot registry between calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["dimension_tradeoff", "group_rates_plot", "per_domain_bars"]


def _require_rows_and_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    if frame.empty:
        raise ValueError(f"{what}: the frame is empty, there is nothing to plot")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; frame has {list(frame.columns)}")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)  # attaches the Agg renderer that savefig draws through
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def per_domain_bars(
    frame: pd.DataFrame,
    value_col: str,
    label_col: str,
    title: str,
    path: str | Path,
    *,
    ci_cols: tuple[str, str] | None = None,
) -> Path:
    """One bar per row (e.g. per domain), labelled by ``label_col``.

    ``ci_cols`` names optional (low, high) columns, e.g. from ``bootstrap_ci``,
    drawn as error bars. NaN values leave an empty slot rather than a zero bar.
    """
    _require_rows_and_columns(frame, [value_col, label_col, *(ci_cols or ())], "per_domain_bars")
    values = frame[value_col].to_numpy(dtype=float)
    positions = np.arange(len(frame))
    error = None
    if ci_cols is not None:
        low, high = (frame[column].to_numpy(dtype=float) for column in ci_cols)
        error = np.vstack([values - low, high - values])

    figure = Figure(figsize=(max(4.0, 0.6 * len(frame) + 2), 4))
    axes = figure.add_subplot()
    axes.bar(positions, values, yerr=error, capsize=3, color="tab:blue")
    axes.set_xticks(positions, frame[label_col].astype(str), rotation=45, ha="right")
    axes.set_ylabel(value_col)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def dimension_tradeoff(frame: pd.DataFrame, path: str | Path, *, title: str = "Coverage vs false failures") -> Path:
    """Coverage against FFR, one labelled point per alignment dimension, coloured
    by Alignment Score. Background contours show where AS (harmonic mean of
    coverage and 1 - FFR) is constant, so the trade-off reads off directly."""
    columns = ["dimension", "coverage", "ffr", "alignment_score"]
    _require_rows_and_columns(frame, columns, "dimension_tradeoff")

    ffr_grid, coverage_grid = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    specificity_grid = 1 - ffr_grid
    with np.errstate(invalid="ignore", divide="ignore"):
        score_grid = np.nan_to_num(2 * coverage_grid * specificity_grid / (coverage_grid + specificity_grid))

    figure = Figure(figsize=(6, 5))
    axes = figure.add_subplot()
    contours = axes.contour(ffr_grid, coverage_grid, score_grid, levels=[0.2, 0.4, 0.6, 0.8], colors="0.75")
    axes.clabel(contours, fmt="AS=%.1f", fontsize=7)
    points = axes.scatter(
        frame["ffr"], frame["coverage"], c=frame["alignment_score"], cmap="viridis", vmin=0, vmax=1, zorder=3
    )
    for row in frame.itertuples(index=False):
        axes.annotate(
            str(row.dimension), (row.ffr, row.coverage), xytext=(4, 4), textcoords="offset points", fontsize=8
        )
    figure.colorbar(points, ax=axes, label="Alignment Score")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("False Failure Rate (aligned items flagged)")
    axes.set_ylabel("Coverage (misaligned items flagged)")
    axes.set_title(title)
    return _save(figure, path)


def group_rates_plot(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    group_col: str | None = None,
    title: str = "Unsafe rate by group",
) -> Path:
    """Bars of ``rate`` per group from :func:`tasks.benchmark.rater_metrics.group_rates` output,
    each annotated with its ``n``, and a dashed line at the pooled rate
    (sum n_positive / sum n) that demographic sensitivity measures gaps against.

    ``group_col`` defaults to the first column, where ``group_rates`` puts it.
    """
    group_col = group_col if group_col is not None else (frame.columns[0] if len(frame.columns) else "group")
    _require_rows_and_columns(frame, [group_col, "n", "n_positive", "rate"], "group_rates_plot")
    positions = np.arange(len(frame))
    pooled_rate = frame["n_positive"].sum() / frame["n"].sum()

    figure = Figure(figsize=(max(4.0, 0.6 * len(frame) + 2), 4))
    axes = figure.add_subplot()
    bars = axes.bar(positions, frame["rate"].to_numpy(dtype=float), color="tab:red")
    axes.bar_label(bars, labels=[f"n={n}" for n in frame["n"]], fontsize=7)
    axes.axhline(pooled_rate, color="black", linestyle="--", linewidth=1, label=f"pooled {pooled_rate:.2f}")
    axes.set_xticks(positions, frame[group_col].astype(str), rotation=45, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_xlabel(str(group_col))
    axes.set_ylabel("rate")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return _save(figure, path)
