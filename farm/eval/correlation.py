"""Rank correlation of two leaderboards (Spearman, Kendall; Pearson and R² beside them) with honest intervals.

With 5–12 systems a Spearman of 0.9 can come from rankings that share little, so every figure here comes with a
95% interval:

- `correlate_annotations`: both leaderboards come from per-instruction annotations (e.g. simulated judge vs
  humans on the same outputs). One bootstrap resample draws instructions with replacement, the *same* draw for
  every model and for both leaderboards, recomputes both leaderboards and their correlation.
- `correlate_tables`: only aggregate tables exist (win rate ± standard error, e.g. a paper's table or a
  published CSV). A parametric bootstrap draws each win rate from Normal(win rate, SE), independently, and
  recomputes the correlation; the interval says how much the SEs alone could move it.

Kendall's τ is τ-b (ties in either ranking handled as scipy does). Intervals are BCa (`farm.eval.stats.
bca_interval`): bias-corrected, with the acceleration from a leave-one-instruction-out jackknife for
`correlate_annotations` and without one (BC) for `correlate_tables`; a percentile interval with few systems can
exclude its own estimate (a Spearman of 1.0 no resample exceeds), so where z₀ is infinite the interval is the
percentile one widened to the estimate, and the `interval` column says which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farm.errors import FarmError
from farm.eval.frames import PreferenceMatrix, to_frame
from farm.eval.stats import bca_interval, bootstrap_counts


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share the mean rank), as Spearman's ρ needs."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, M) arrays (NaN when a row is constant)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def _kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row pair of (B, M) arrays, vectorised over the M(M−1)/2 pairs of systems.

    >>> float(_kendall_rows(np.array([[1., 2, 3, 4]]), np.array([[1., 3, 2, 4]]))[0])  # 5 concordant, 1 not
    0.6666666666666666
    """
    i, j = np.triu_indices(a.shape[-1], k=1)
    sa, sb = np.sign(a[..., i] - a[..., j]), np.sign(b[..., i] - b[..., j])  # (B, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sa * sb).sum(-1) / np.sqrt((sa != 0).sum(-1) * (sb != 0).sum(-1))


def correlations(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman, Kendall τ-b, Pearson and R² (= Pearson², the R² of a least-squares line) of rows of a and b.

    >>> out = correlations(np.array([1., 2, 3, 4]), np.array([1., 3, 2, 4]))
    >>> float(out["spearman"]), round(float(out["kendall"]), 4), float(out["pearson"])
    (0.8, 0.6667, 0.8)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    r = _pearson_rows(a, b)
    return {"spearman": _pearson_rows(_ranks(a), _ranks(b)), "kendall": _kendall_rows(a, b),
            "pearson": r, "r2": r * r}


def _summary(point: dict[str, np.ndarray], boot: dict[str, np.ndarray], level: float, n_models: int,
             how: str, n_boot: int, jackknife: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    rows = []
    for name in ("spearman", "kendall", "pearson", "r2"):
        if n_boot:
            lo, hi, method = bca_interval(boot[name], float(point[name]), level,
                                          None if jackknife is None else jackknife[name])
        else:
            lo, hi, method = np.nan, np.nan, "none"
        rows.append({"statistic": name, "value": float(point[name]), "ci_low": float(lo), "ci_high": float(hi),
                     "n_models": n_models, "interval": f"{how}; {method}", "n_boot": n_boot})
    return pd.DataFrame(rows).set_index("statistic")


def correlate_tables(a: pd.DataFrame | pd.Series, b: pd.DataFrame | pd.Series, *, column: str = "win_rate",
                     se_column: str | None = "standard_error", n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """Correlation of two aggregate leaderboards on their common models (index), with a parametric bootstrap
    interval drawing each value from Normal(value, SE). A missing SE column/value counts as 0 (no noise).

    Returns a frame indexed by statistic (spearman, kendall, pearson, r2) with value, ci_low, ci_high.
    """
    va, sa = _column_and_se(a, column, se_column)
    vb, sb = _column_and_se(b, column, se_column)
    common = va.dropna().index.intersection(vb.dropna().index)
    if len(common) < 3:
        raise FarmError(f"need at least 3 models in both leaderboards to correlate, found {len(common)}",
                        hint=f"common: {list(common)}")
    x, y = va[common].to_numpy(float), vb[common].to_numpy(float)
    ex, ey = sa.reindex(common).fillna(0).to_numpy(float), sb.reindex(common).fillna(0).to_numpy(float)
    rng = np.random.default_rng(seed)
    bx = x + ex * rng.standard_normal((n_boot, len(x)))  # (B, M)
    by = y + ey * rng.standard_normal((n_boot, len(y)))
    return _summary(correlations(x, y), correlations(bx, by), level, len(common), "parametric (value ± SE)",
                    n_boot)


def _column_and_se(t: pd.DataFrame | pd.Series, column: str, se_column: str | None) -> tuple[pd.Series, pd.Series]:
    if isinstance(t, pd.Series):
        return t.astype(float), pd.Series(0.0, index=t.index)
    if column not in t.columns:
        raise FarmError(f"leaderboard has no column '{column}'", field=column, hint=f"columns: {list(t.columns)}")
    se = t[se_column] if se_column and se_column in t.columns else pd.Series(0.0, index=t.index)
    return t[column].astype(float), se.astype(float)


def correlate_annotations(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Correlation of the win rates of two annotation sets (anything `farm.eval.to_frame` takes) on their common
    models and common instructions, with a bootstrap over instructions shared by all models and both sides.
    """
    fa, fb = to_frame(a), to_frame(b)
    models = sorted(set(fa["generator_2"]) & set(fb["generator_2"]))
    keys = sorted(set(zip(fa["instruction"], fa["input"])) & set(zip(fb["instruction"], fb["input"])))
    if len(models) < 3:
        raise FarmError(f"need at least 3 models annotated on both sides, found {models}")
    if not keys:
        raise FarmError("the two annotation sets share no instruction (joined on instruction + input)")
    ma = PreferenceMatrix.from_frame(fa, models, keys)
    mb = PreferenceMatrix.from_frame(fb, models, keys)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = correlations(ma.S.sum(1) / ma.C.sum(1), mb.S.sum(1) / mb.C.sum(1))
    # the same resample of instructions for both leaderboards: one seed, one count matrix
    w = bootstrap_counts(len(keys), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = correlations((w @ ma.S.T) / (w @ ma.C.T), (w @ mb.S.T) / (w @ mb.C.T))
        # jackknife: each instruction left out once, for BCa's acceleration
        jack = correlations((ma.S.sum(1) - ma.S.T) / (ma.C.sum(1) - ma.C.T), (mb.S.sum(1) - mb.S.T) / (mb.C.sum(1) - mb.C.T))
    return _summary(point, boot, level, len(models), "bootstrap over instructions", n_boot, jack)
