"""Seeds and prompts: intervals that include training-seed variance, minimum detectable differences, and how many
prompts × seeds a comparison needs.

The data of a comparison run is an array `v[m, s, i]`: the preference for method m's answer over the baseline's
(P(method better) in [0, 1]; 1 / 0.5 / 0 for a hard verdict) with method training seed s on eval prompt i. A
method's win rate is 100 × the mean over seeds and prompts.

- **Hierarchical bootstrap** (`resampled_means`): resample seeds with replacement, then prompts with replacement;
  the same seed indices and the same prompts for every method in one draw, so differences between methods stay
  paired on the prompts and rank statistics see one coherent resampled world (Field & Welsh 2007, "Bootstrapping
  clustered data"; as the RL-evaluation literature asks for seed variance, Agarwal et al. 2021).
- **Intervals** (`interval`): percentiles of those draws, widened to include the estimate where they would not
  (and flagged `clipped`). The two-level bootstrap counts the seed × prompt noise at both levels, so it is
  conservative for means (tests/test_eval_power.py checks it against the true spread by simulation).
- **Power** (`variance_components`, `minimum_detectable`, `required_size`): the paired difference
  d[s, i] = v[m, s, i] − v[ref, s, i] is modelled as Δ + a_i (prompt) + u_s (seed) + e_si, so
  Var(mean d) = σ²_a / n + τ² / k + σ²_e / (n k) for n prompts and k seeds. The components are estimated from a
  pilot run by a two-way ANOVA (method of moments, negative estimates set to 0). A difference is detected at
  level α with power 1 − β when |Δ| ≥ (z_{1−α/2} + z_{1−β}) · SE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z_975 = float(sps.norm.ppf(0.975))


def draws(n_seeds: int, n_prompts: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(seed counts (B, S), prompt counts (B, N)): how often each seed / prompt is drawn in each resample."""
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    p_idx = rng.integers(0, n_prompts, size=(n_boot, n_prompts))
    sc = np.zeros((n_boot, n_seeds))
    pc = np.zeros((n_boot, n_prompts))
    np.add.at(sc, (np.arange(n_boot)[:, None], s_idx), 1.0)
    np.add.at(pc, (np.arange(n_boot)[:, None], p_idx), 1.0)
    return sc, pc


def resampled_means(v: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(B, M) means of `v` (M, S, N) over seeds then prompts, each draw resampling both (shared by all methods).
    NaN entries (a missing verdict) are left out of their mean."""
    v = np.asarray(v, dtype=float)
    M, S, N = v.shape
    sc, pc = draws(S, N, n_boot, seed)
    ok = ~np.isnan(v)
    x = np.where(ok, v, 0.0)
    # per draw, method, seed: the prompt-weighted sum and weight (B, M, S)
    num = np.einsum("msi,bi->bms", x, pc)
    den = np.einsum("msi,bi->bms", ok.astype(float), pc)
    per_seed = num / np.where(den > 0, den, np.nan)  # (B, M, S) a seed's mean over the drawn prompts
    w = sc[:, None, :] * ~np.isnan(per_seed)
    return np.nansum(per_seed * sc[:, None, :], axis=2) / w.sum(axis=2)


def point_means(v: np.ndarray) -> np.ndarray:
    """(M,) mean over prompts within each seed, then over seeds."""
    return np.nanmean(np.nanmean(np.asarray(v, dtype=float), axis=2), axis=1)


@dataclass
class Interval:
    low: float
    high: float
    clipped: bool = False
    """the bootstrap distribution lay entirely on one side of the estimate: the interval was widened to it"""


def interval(estimate: float, boot: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval of bootstrap replicates `boot`, widened (and flagged `clipped`) when it would exclude
    the estimate itself (a rank correlation of 1.0 whose replicates are all below 1). For rank correlations over a
    handful of methods this covers better than BCa: in tests/test_eval_power.py's simulation, 89–97% for a nominal
    95% where BCa gave 78–91% (BCa's bias correction over-shifts the skewed, attenuated replicates).

    >>> iv = interval(1.0, np.array([0.8, 0.9, 0.95, 0.9])); (iv.high, iv.clipped)
    (1.0, True)
    """
    boot = np.asarray(boot, float)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or not np.isfinite(estimate):
        return Interval(float("nan"), float("nan"))
    alpha = (1 - level) / 2
    lo, hi = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
    clipped = not (lo <= estimate <= hi)
    return Interval(min(lo, float(estimate)), max(hi, float(estimate)), clipped)


# ----- power -----

@dataclass
class Components:
    """Variance components of a paired per-prompt difference (in squared win-rate points)."""

    prompt: float
    """σ²_a: how much the difference varies between prompts (shared by all seeds)"""
    seed: float
    """τ²: how much a method's mean difference varies between training seeds"""
    residual: float
    """σ²_e: the rest (seed × prompt interaction and judge noise)"""
    n_prompts: int
    n_seeds: int

    def se(self, n_prompts: int, n_seeds: int) -> float:
        """Standard error of the mean difference with n prompts and k seeds."""
        return float(np.sqrt(self.prompt / n_prompts + self.seed / n_seeds + self.residual / (n_prompts * n_seeds)))


def variance_components(d: np.ndarray) -> Components:
    """Two-way random-effects ANOVA (no replication) of d (S seeds, N prompts), in the units of d. With one seed
    the seed and residual components cannot be told apart: seed = 0 and the residual holds both."""
    d = np.asarray(d, dtype=float)
    if np.isnan(d).any():  # a missing verdict: the cell gets its prompt's mean (keeps the design balanced)
        d = np.where(np.isnan(d), np.nanmean(d, axis=0, keepdims=True), d)
    S, N = d.shape
    grand = d.mean()
    if S == 1:
        return Components(0.0, 0.0, float(d.var(ddof=1)) if N > 1 else 0.0, N, 1)
    ms_seed = N * ((d.mean(1) - grand) ** 2).sum() / (S - 1)
    ms_prompt = S * ((d.mean(0) - grand) ** 2).sum() / (N - 1)
    resid = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + grand
    ms_res = (resid ** 2).sum() / ((S - 1) * (N - 1))
    return Components(prompt=max(0.0, (ms_prompt - ms_res) / S), seed=max(0.0, (ms_seed - ms_res) / N),
                      residual=float(ms_res), n_prompts=N, n_seeds=S)


def minimum_detectable(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at level α detects with probability `power`, given its SE.

    >>> round(minimum_detectable(1.0), 3)
    2.802
    """
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)


def power_of(delta: float, se: float, alpha: float = 0.05) -> float:
    """P(a two-sided level-α z-test rejects) when the true difference is `delta` and the estimate's SE is `se`."""
    z = sps.norm.ppf(1 - alpha / 2)
    if se <= 0:  # no noise at all: any true difference is found, none is found by chance only at level α
        return 1.0 if delta != 0 else alpha
    return float(sps.norm.cdf(abs(delta) / se - z) + sps.norm.cdf(-abs(delta) / se - z))


def required_size(c: Components, delta: float, seeds: tuple[int, ...] = (1, 2, 3, 5, 10), alpha: float = 0.05,
                  power: float = 0.8, max_prompts: int = 10**7) -> dict[int, int | None]:
    """For each number of seeds k: the fewest prompts n with power ≥ `power` to detect `delta`, or None when no n
    suffices (the seed variance alone, τ²/k, is too large).

    >>> c = Components(prompt=900.0, seed=0.0, residual=0.0, n_prompts=810, n_seeds=2)
    >>> required_size(c, 3.0, seeds=(1,))  # SE = 30/√n must be ≤ 3/2.80
    {1: 785}
    """
    target = abs(delta) / (sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    out: dict[int, int | None] = {}
    for k in seeds:
        rest = target ** 2 - c.seed / k
        per_prompt = c.prompt + c.residual / k
        if rest <= 0:
            out[k] = None
        elif per_prompt == 0:
            out[k] = 1
        else:
            n = int(np.ceil(per_prompt / rest))
            out[k] = n if n <= max_prompts else None
    return out
