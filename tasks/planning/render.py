"""A plan for people: a terminal table, a markdown artifact, and its totals as plain data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table

from tasks.planning.loads import Bounds, BuildPlan, LoadTotal, number_text


def plan_totals(plan: BuildPlan) -> dict[str, Any]:
    """The plan's totals as plain data (JSON-able), each as [lower, upper]."""
    total = plan.total()

    def whole(bounds: Bounds) -> list[int]:
        return [math.ceil(bounds.lower), math.ceil(bounds.upper)]

    return {
        "dataset": plan.dataset, "profile": plan.profile, "source_rows": plan.source_rows, "prompts": plan.prompts,
        "requests": whole(total.requests), "input_tokens": whole(total.input_tokens),
        "output_tokens": whole(total.output_tokens),
        "seconds": [round(total.seconds.lower, 1), round(total.seconds.upper, 1)] if total.seconds else None,
        "cost_usd": [round(total.cost_usd.lower, 4), round(total.cost_usd.upper, 4)] if total.cost_usd else None,
        "untimed": list(total.untimed), "unpriced": list(total.unpriced),
    }


PLAN_COLUMNS = ("stage / role", "model / engine", "rows", "requests", "input tokens", "output tokens", "time",
                "cost (USD)")


def plan_rows(plan: BuildPlan) -> list[list[str]]:
    """The plan as table rows: one per load, one total per model, one grand total."""
    rows = [[f"{load.stage} /\n{load.role}", f"{load.spec_model}\n({load.engine})", _range(load.rows),
             _range(load.requests), _range(load.input_tokens), _range(load.output_tokens), _duration(load.seconds),
             _money(load.cost_usd)]
            for load in plan.loads]
    for (model, engine), total in plan.by_model().items():
        rows.append(["total", f"{model}\n({engine})", "", *_total_cells(total)])
    if plan.loads:
        rows.append(["total", "all models", "", *_total_cells(plan.total())])
    return rows


def render_plan(plan: BuildPlan) -> Table:
    """The plan as a rich table for the terminal (the notes go in the caption)."""
    table = Table(title=_title(plan), caption="\n".join(_footer(plan)), caption_justify="left")
    for name in PLAN_COLUMNS:
        # Numbers stay on one line; the long model names fold instead.
        wraps = name in ("stage / role", "model / engine")
        table.add_column(name, no_wrap=not wraps, overflow="fold", min_width=20 if name == "model / engine" else None)
    for row in plan_rows(plan):
        table.add_row(*row, style="bold" if row[0] == "total" else None)
    return table


def render_plan_markdown(plan: BuildPlan) -> str:
    """The plan as markdown (a Prefect artifact): table, assumptions per load, notes."""
    lines = [f"# {_title(plan)}", "", "| " + " | ".join(PLAN_COLUMNS) + " |",
             "|" + "---|" * len(PLAN_COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in row) + " |"
              for row in plan_rows(plan)]
    lines += ["", "## Assumptions", ""]
    lines += [f"- **{load.stage} / {load.role} / {load.spec_model}**: {load.assumption}" for load in plan.loads]
    lines += [f"- {line}" for line in _footer(plan)]
    return "\n".join(lines) + "\n"


def _title(plan: BuildPlan) -> str:
    rows = f"{plan.source_rows:,} source rows" if plan.source_rows is not None else "source rows unknown"
    prompts = f"{plan.prompts:,} prompts" if plan.prompts is not None else "prompts unknown"
    return f"Plan: {plan.dataset} on profile {plan.profile} ({rows}, {prompts})"


def _footer(plan: BuildPlan) -> list[str]:
    counting = ", ".join(f"{model}: {how}" for model, how in plan.token_counting.items())
    total = plan.total()
    lines = [*plan.notes, f"Tokens counted by {counting}."]
    if total.untimed:
        lines.append(f"Time n/a (no output_tokens_per_second in the profile, none calibrated): {', '.join(total.untimed)}.")
    if total.unpriced:
        lines.append(f"Cost n/a (no prices in the profile): {', '.join(total.unpriced)}.")
    return lines


def _total_cells(total: LoadTotal) -> list[str]:
    # A total over some models only says so; the footer names the others.
    time_cell = _duration(total.seconds) + (" + n/a" if total.untimed and total.seconds else "")
    cost_cell = _money(total.cost_usd) + (" + n/a" if total.unpriced and total.cost_usd else "")
    return [_range(total.requests), _range(total.input_tokens), _range(total.output_tokens), time_cell, cost_cell]


def _span(bounds: Bounds, show: Callable[[float], str]) -> str:
    """One value when the bounds agree, "≤ upper" from zero, else "lower – upper"."""
    lower, upper = show(bounds.lower), show(bounds.upper)
    if lower == upper:
        return upper
    return f"≤ {upper}" if bounds.lower == 0 else f"{lower} – {upper}"


def _range(bounds: Bounds) -> str:
    return _span(bounds, number_text)


def _duration(seconds: Bounds | None) -> str:
    return "n/a" if seconds is None else _span(seconds, _human_seconds)


def _human_seconds(value: float) -> str:
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _money(cost: Bounds | None) -> str:
    return "n/a" if cost is None else _span(cost, lambda value: f"${value:,.2f}")
