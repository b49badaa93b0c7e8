"""Resampling and paired tests shared by the leaderboard, the rank correlations and the method comparisons.

The bootstrap here is over *instructions*: one resample draws n instructions with replacement and every model
(and every leaderboard being compared) is re-scored on that same draw, so differences between models keep their
pairing. A draw is stored as a count matrix W (B, n): W[b, i] = how many times instruction i was drawn in
resample b. Any per-instruction sum then becomes a matrix product, W @ S.T, which is what makes a 200-model
leaderboard with 1,000 resamples take milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resample counts: row b says how often each of the n items was drawn in resample b.

    Depends only on (n, n_boot, seed): the same seed gives the same resamples on any machine.

    >>> w = bootstrap_counts(5, 3, seed=0)
    >>> w.shape, w.sum(axis=1).tolist()
    ((3, 5), [5.0, 5.0, 5.0])
    >>> bool((bootstrap_counts(5, 3, seed=0) == w).all())
    True
    """
    if n <= 0 or n_boot <= 0:
        return np.zeros((max(n_boot, 0), max(n, 0)), dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (B, n) instruction indices
    flat = idx + (np.arange(n_boot) * n)[:, None]  # offset each row so one bincount counts them all
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def percentile_interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along `axis`, ignoring NaN resamples (a model absent from a resample).

    >>> lo, hi = percentile_interval(np.arange(101.0), 0.9)
    >>> round(float(lo), 6), round(float(hi), 6)
    (5.0, 95.0)
    """
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    a = (1 - level) / 2
    samples = np.asarray(samples, dtype=float)
    quantile = np.nanquantile if np.isnan(samples).any() else np.quantile  # nanquantile is 10× slower
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        lo, hi = quantile(samples, [a, 1 - a], axis=axis)
    return lo, hi


class _quiet_nan_warnings:
    """nanquantile warns on all-NaN slices (a model with no valid preference); the NaN it returns is the answer."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def paired_comparison(a: np.ndarray, b: np.ndarray, *, name_a: str = "a", name_b: str = "b",
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Compare two methods scored on the same instructions: a[i], b[i] = P(method better than the baseline) on
    instruction i (NaN = missing; only instructions where both exist are used).

    Returns one row: win rates of each (×100), `difference` = win_rate_a − win_rate_b, its paired `standard_error`
    (sample std of the per-instruction differences, ddof 1, / √n, ×100), the percentile bootstrap interval of the
    difference (`ci_low`, `ci_high`), the two-sided paired t-test p-value (`p_value_t`), the two-sided bootstrap
    p-value (`p_value_bootstrap`: twice the smaller share of resampled differences on either side of 0, at least
    1/n_boot), and `n` instructions.

    >>> row = paired_comparison(np.array([1, 1, 0.5, 0]), np.array([0, 1, 0, 0]), n_boot=200)
    >>> float(row["difference"].iloc[0]), round(float(row["standard_error"].iloc[0]), 4)
    (37.5, 23.9357)
    """
    from scipy import stats as sps

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_comparison needs two 1-D arrays of the same length, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    d = a - b
    diff = d.mean() * 100 if n else math.nan
    se = d.std(ddof=1) / math.sqrt(n) * 100 if n > 1 else math.nan
    if n > 1 and np.ptp(d) > 0:
        p_t = float(sps.ttest_rel(a, b).pvalue)
    else:  # all differences equal: the t statistic is 0/0 (or ±inf); report the degenerate answer plainly
        p_t = 1.0 if n > 1 and d[0] == 0 else (0.0 if n > 1 else math.nan)
    w = bootstrap_counts(n, n_boot, seed)
    boot = (w @ d) / n * 100 if n else np.full(n_boot, np.nan)  # (B,)
    lo, hi = percentile_interval(boot, level)
    if n:
        share = min((boot <= 0).mean(), (boot >= 0).mean())
        p_boot = float(min(1.0, max(2 * share, 1 / n_boot)))
    else:
        p_boot = math.nan
    return pd.DataFrame([{
        "model_a": name_a, "model_b": name_b,
        "win_rate_a": a.mean() * 100 if n else math.nan, "win_rate_b": b.mean() * 100 if n else math.nan,
        "difference": diff, "standard_error": se, "ci_low": float(lo), "ci_high": float(hi),
        "p_value_t": p_t, "p_value_bootstrap": p_boot, "n": n,
    }])


def bca_interval(samples: np.ndarray, estimate: np.ndarray | float, level: float = 0.95,
                 jackknife: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated (BCa) bootstrap interval (Efron 1987), per column of `samples` (B, …).

    z₀ = Φ⁻¹(share of resamples below the estimate, ties counting half); the acceleration a comes from the
    jackknife values (n, …) when given (else a = 0: the bias-corrected "BC" interval). Fallback, stated in the
    returned method: when z₀ is infinite (every resample on one side of the estimate, e.g. a Spearman of 1.0
    that no resample can exceed) or the BCa ends still exclude the estimate, the percentile interval is widened
    to reach the estimate. An interval never excludes its own estimate. Returns (low, high, method).

    >>> boot = np.r_[np.full(50, 1.0), np.linspace(0.9, 0.99, 50)]  # half the resamples equal the estimate 1.0
    >>> lo, hi, how = bca_interval(boot, 1.0)
    >>> bool(lo <= 1.0 <= hi), str(how)
    (True, 'BC')
    """
    from scipy.stats import norm

    samples = np.asarray(samples, float)
    est = np.broadcast_to(np.asarray(estimate, float), samples.shape[1:])
    B = np.sum(~np.isnan(samples), axis=0)
    share = (np.nansum(samples < est, axis=0) + 0.5 * np.nansum(samples == est, axis=0)) / np.maximum(B, 1)
    with np.errstate(all="ignore"):
        z0 = norm.ppf(share)
        if jackknife is not None:
            jk = np.asarray(jackknife, float)
            dev = np.nanmean(jk, axis=0) - jk
            a = np.nansum(dev ** 3, axis=0) / (6 * np.nansum(dev ** 2, axis=0) ** 1.5)
            a = np.where(np.isfinite(a), a, 0.0)
        else:
            a = np.zeros_like(z0)
        z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
        adj = [norm.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq))) for zq in z]
    lo, hi = np.full(est.shape, np.nan), np.full(est.shape, np.nan)
    method = np.full(est.shape, "BCa" if jackknife is not None else "BC", dtype=object)
    p_lo, p_hi = percentile_interval(samples, level)
    for idx in np.ndindex(est.shape):
        col = samples[(slice(None), *idx)]
        col = col[~np.isnan(col)]
        if len(col) == 0 or np.isnan(est[idx]):
            method[idx] = "none"
            continue
        if np.isfinite(z0[idx]) and np.isfinite(adj[0][idx]) and np.isfinite(adj[1][idx]):
            lo[idx], hi[idx] = np.quantile(col, [adj[0][idx], adj[1][idx]])
        else:
            lo[idx], hi[idx] = np.asarray(p_lo)[idx], np.asarray(p_hi)[idx]
            method[idx] = "percentile, widened to the estimate"
        if not lo[idx] <= est[idx] <= hi[idx]:
            lo[idx], hi[idx] = min(lo[idx], est[idx]), max(hi[idx], est[idx])
            method[idx] = "percentile, widened to the estimate" if method[idx] != "BCa" else "BCa, widened"
    if est.shape == ():
        return lo[()], hi[()], method[()]
    return lo, hi, method
