"""Figures of a `farm compare` run, read at a glance: axes zoomed to the data, one method order in every panel
(the leaderboard's), SFT as a reference line, intervals whose meaning is written on the figure.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state, no backend switch), so they work on a
server and leave a notebook's inline backend alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

JUDGES = (("human", "simulated human"), ("pool", "eval pool"), ("gold", "gold"))


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def _save(fig, path: Path) -> str:
    import io

    from farm.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _zoom(lo: np.ndarray, hi: np.ndarray, ref: float | None = None) -> tuple[float, float]:
    vals = np.concatenate([lo, hi] + ([np.array([ref])] if ref is not None else []))
    vals = vals[np.isfinite(vals)]
    a, b = float(vals.min()), float(vals.max())
    pad = max(1.0, 0.08 * (b - a))
    return a - pad, b + pad


def winrates(lb: pd.DataFrame, path: Path) -> str:
    """One panel per judge: each method's win rate with its 95% interval, methods in the leaderboard's order, the
    SFT policy's value as a dashed line."""
    judges = [(j, t) for j, t in JUDGES if f"{j}_win_rate" in lb]
    names = list(lb.index)
    y = np.arange(len(names))[::-1]
    fig = _figure(4.2 * len(judges), 0.45 * len(names) + 1.6)
    axes = fig.subplots(1, len(judges), sharey=True, squeeze=False)[0]
    for ax, (j, title) in zip(axes, judges):
        v, lo, hi = (lb[f"{j}_{c}"].to_numpy(float) for c in ("win_rate", "win_rate_ci_low", "win_rate_ci_high"))
        ref = float(lb.loc["sft", f"{j}_win_rate"]) if "sft" in lb.index else None
        colors = ["C3" if n == "sft" else "C0" for n in names]
        ax.errorbar(v, y, xerr=[v - lo, hi - v], fmt="none", ecolor="grey", capsize=3, lw=1)
        ax.scatter(v, y, c=colors, zorder=3)
        if ref is not None:
            ax.axvline(ref, ls="--", c="C3", lw=1, label="SFT")
        ax.set_xlim(*_zoom(lo, hi, ref))
        ax.set_title(title)
        ax.set_xlabel("win rate vs baseline (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names)
    fig.suptitle("Win rate with 95% intervals (seeds, then prompts resampled)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def forest(paired: pd.DataFrame, order: list[str], path: Path) -> str:
    """Paired difference with SFT (points) per method and judge, 95% intervals, zero line."""
    judges = [(j, t) for j, t in JUDGES if j in set(paired.judge)]
    names = [m for m in order if m in set(paired.model_a)]
    y = np.arange(len(names))[::-1]
    fig = _figure(4.2 * len(judges), 0.45 * len(names) + 1.6)
    axes = fig.subplots(1, len(judges), sharey=True, squeeze=False)[0]
    for ax, (j, title) in zip(axes, judges):
        p = paired[paired.judge == j].set_index("model_a").loc[names]
        d, lo, hi = (p[c].to_numpy(float) for c in ("difference", "ci_low", "ci_high"))
        col = np.where(lo > 0, "C2", np.where(hi < 0, "C3", "C7"))
        ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="grey", capsize=3, lw=1)
        ax.scatter(d, y, c=list(col), zorder=3)
        ax.axvline(0, c="k", lw=1)
        ax.set_xlim(*_zoom(lo, hi, 0.0))
        ax.set_title(title)
        ax.set_xlabel("Δ win rate vs SFT (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names)
    fig.suptitle("Against the SFT policy on the same prompts: Δ with 95% interval "
                 "(green above, red below SFT)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def pool_vs_human(lb: pd.DataFrame, corr: pd.DataFrame | None, path: Path) -> str:
    """Each method at (pool win rate, human win rate) with 95% intervals, labelled, and the rank correlation."""
    fig = _figure(6.0, 5.0)
    ax = fig.subplots()
    x, y = lb["pool_win_rate"].to_numpy(float), lb["human_win_rate"].to_numpy(float)
    xe = [x - lb["pool_win_rate_ci_low"], lb["pool_win_rate_ci_high"] - x]
    ye = [y - lb["human_win_rate_ci_low"], lb["human_win_rate_ci_high"] - y]
    ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3, ms=5, c="C0", ecolor="lightgrey")
    order = np.argsort(y)
    for rank, i in enumerate(order):  # alternate label sides so neighbours do not overlap
        ax.annotate(lb.index[i], (x[i], y[i]), textcoords="offset points", xytext=(6 if rank % 2 else -6, 4),
                    ha="left" if rank % 2 else "right", fontsize=9)
    lo = min(x.min(), y.min()) - 3
    hi = max(x.max(), y.max()) + 3
    ax.plot([lo, hi], [lo, hi], ls="--", c="grey", lw=1, label="equal win rates")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("win rate under the eval pool (%)")
    ax.set_ylabel("win rate under the simulated human (%)")
    title = "Would humans agree? (95% intervals)"
    if corr is not None and len(corr):
        r = corr[(corr.pair == "pool vs human") & (corr.statistic == "spearman")]
        if len(r):
            r = r.iloc[0]
            title += f"\nSpearman ρ = {r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def overoptimisation(df: pd.DataFrame, sft_gold: float | None, path: Path) -> str:
    """Gold win rate (± 1 SE over prompts) and the proxy reward along best-of-n's n and PPO's steps, SFT dashed."""
    methods = list(dict.fromkeys(df["method"]))
    fig = _figure(4.8 * len(methods), 3.8)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, m in zip(axes, methods):
        d = df[df["method"] == m].sort_values("x")
        xname = d["x_name"].iloc[0]
        ax.errorbar(d["x"], d["gold_win_rate"], yerr=d.get("gold_se"), fmt="o-", c="C0", capsize=3,
                    label="gold win rate ± 1 SE")
        if sft_gold is not None:
            ax.axhline(sft_gold, ls="--", c="C3", lw=1, label="SFT (gold)")
        if xname == "n":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xname + (" (log scale)" if xname == "n" else ""))
        ax.set_ylabel("gold win rate vs baseline (%)", color="C0")
        if d["proxy_reward"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(d["x"], d["proxy_reward"], "s:", c="C1", label="proxy reward")
            ax2.set_ylabel("proxy reward (reward model)", color="C1")
            ax.set_title(f"{m}: proxy vs gold", fontsize=10)
        else:
            ax.set_title(f"{m}: picked by the training pool", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
