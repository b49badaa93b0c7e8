"""PNG figures for leaderboards and judge meta-evaluation.

Each function draws on a `matplotlib.figure.Figure` (no pyplot state, no backend switch: it works on a server
without a display and leaves a notebook's inline backend alone), writes it to `path` when one is given, and
returns it: the last expression of a notebook cell, or `display(fig)`, shows it inline.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from farm.io import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def _figure(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        atomic_write_bytes(path, buf.getvalue())
    return fig


def _interval(lb: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Distances below/above the value: the bootstrap interval if present, else ±1.96 SE, else none."""
    v = lb[column].to_numpy(float)
    if column == "win_rate" and "win_rate_ci_low" in lb and lb["win_rate_ci_low"].notna().any():
        return v - lb["win_rate_ci_low"].to_numpy(float), lb["win_rate_ci_high"].to_numpy(float) - v
    if column == "win_rate" and "standard_error" in lb:
        e = 1.96 * lb["standard_error"].to_numpy(float)
        return e, e
    return np.zeros_like(v), np.zeros_like(v)


def winrate_bars(lb: pd.DataFrame, path: str | os.PathLike | None = None,
                 title: str = "Win rate vs baseline") -> Figure:
    """Horizontal bars of win rate (best on top) with 95% intervals, and LC win rate as dots when present."""
    lb = lb.sort_values("win_rate")
    lo, hi = _interval(lb, "win_rate")
    fig = _figure(7, 0.32 * len(lb) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(lb))
    ax.barh(y, lb["win_rate"], xerr=np.nan_to_num([lo, hi]), color="#4C72B0", ecolor="#333333", capsize=2,
            label="win rate (95% interval)")
    if "length_controlled_winrate" in lb:
        ax.plot(lb["length_controlled_winrate"], y, "o", color="#DD8452", label="length-controlled")
    ax.axvline(50, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, lb.index)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% preferred over the baseline")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def winrate_vs_length(lb: pd.DataFrame, path: str | os.PathLike | None = None,
                      title: str = "Win rate vs output length") -> Figure:
    """Scatter of win rate against average output length (characters), with 95% intervals and names."""
    lo, hi = _interval(lb, "win_rate")
    fig = _figure(7, 5)
    ax = fig.subplots()
    ax.errorbar(lb["avg_length"], lb["win_rate"], yerr=np.nan_to_num([lo, hi]), fmt="o", color="#4C72B0",
                ecolor="#999999", capsize=2, label="win rate")
    if "length_controlled_winrate" in lb:
        ax.plot(lb["avg_length"], lb["length_controlled_winrate"], "s", color="#DD8452", ms=4,
                label="length-controlled")
    for name, row in lb.iterrows():
        ax.annotate(str(name), (row["avg_length"], row["win_rate"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("average output length (characters)")
    ax.set_ylabel("% preferred over the baseline")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def agreement_table_plot(table: pd.DataFrame, path: str | os.PathLike | None = None,
                         title: str = "Agreement with the human majority") -> Figure:
    """The evaluator leaderboard as a picture: a table of the main figures, one row per judge."""
    cols = [c for c in ("agreement", "agreement_no_ties", "agreement_soft", "bias", "variance",
                        "p_prefer_longer", "p_prefer_first", "p_prefer_lists", "n_parsed", "n_unparsed")
            if c in table.columns]
    cells = []
    for _, row in table[cols].iterrows():
        cells.append(["" if pd.isna(v) else (f"{v:.0f}" if c.startswith("n_") else
                                             f"{v:.2f}" if c.startswith("p_") else f"{v:.1f}")
                      for c, v in row.items()])
    fig = _figure(1.1 * len(cols) + 2.5, 0.4 * len(table) + 1)
    ax = fig.subplots()
    ax.axis("off")
    t = ax.table(cellText=cells, rowLabels=list(table.index), colLabels=[c.replace("_", " ") for c in cols],
                 loc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.3)
    ax.set_title(title)
    return _save(fig, path)
