"""Bradley–Terry ratings on the Elo scale from pairwise annotations among many models (Chatbot Arena's and
Arena-Hard's method), with bootstrap intervals, ties and style control.

One annotation compares generator_1 (a) with generator_2 (b) and gives p = P(b better). The model is

    logit P(b better) = θ_b − θ_a (+ φ · s_ab with style control),       rating_m = 1000 + 400 / ln 10 · θ_m

fitted by maximum likelihood with p as a soft target, which is exactly Chatbot Arena's `compute_mle_elo`
(a win counts 1, a tie half a win for each side, a weighted judge's p as it is). `ties="drop"` leaves ties out
instead. Ratings are fixed up to a constant: the `anchor` model gets 1000 (Arena-Hard anchors its baseline),
or without one the mean rating is 1000.

Style control (lmarena, "style_control"): each annotation carries s_ab, for four features of each output
(length in characters, markdown headers, list items, bold spans) the normalised difference
(f_b − f_a) / (f_b + f_a + 1), standardised over annotations; the ratings are then the models' strengths with
those held equal, and `style_coefficients` says how much the judge rewards each feature.

Intervals: bootstrap over instructions (every resample redraws the instructions with replacement, with all their
annotations, for all models at once; where each battle has its own prompt this is Arena's battle bootstrap).
`bootstrap="one-step"` (default) takes, per resample, one Newton step from the full-data fit with the full-data
Hessian (the resample's gradient is a matrix product of the resample counts with per-instruction gradients):
exact to first order, and what makes 1,000 resamples of a 200-model leaderboard fast. `bootstrap="exact"`
refits every resample to convergence (Newton from the full-data fit).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from farm.errors import FarmError
from farm.eval.frames import codes, key_strings, to_frame
from farm.eval.glm import sigmoid
from farm.eval.stats import bootstrap_counts, percentile_interval

SCALE, BASE, INIT = 400.0, 10.0, 1000.0
ELO_PER_LOGIT = SCALE / math.log(BASE)
STYLE_FEATURES = ("length", "headers", "lists", "bold")
_HEADER = re.compile(r"^#{1,6}\s", re.M)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_counts(texts: pd.Series) -> np.ndarray:
    """(n, 4) length in characters, markdown headers, list items, bold spans of each text.

    >>> style_counts(pd.Series(["# Title\\n- a\\n- **b**", "plain"])).tolist()
    [[19.0, 1.0, 2.0, 1.0], [5.0, 0.0, 0.0, 0.0]]
    """
    return np.stack([texts.str.len().to_numpy(float), texts.str.count(_HEADER).to_numpy(float),
                     texts.str.count(_LIST).to_numpy(float), texts.str.count(_BOLD).to_numpy(float)], axis=1)


def style_features(output_1: pd.Series, output_2: pd.Series) -> np.ndarray:
    """lmarena's style covariates: (f₂ − f₁) / (f₂ + f₁ + 1) per feature, standardised (mean 0, sd 1; a constant
    feature stays 0)."""
    f1, f2 = style_counts(output_1), style_counts(output_2)
    s = (f2 - f1) / (f2 + f1 + 1)
    sd = s.std(axis=0)
    return np.divide(s - s.mean(axis=0), sd, out=np.zeros_like(s), where=sd > 0)


@dataclass
class BTResult:
    ratings: pd.DataFrame
    """per model: rating, rating_ci_low, rating_ci_high, n_annotations (sorted by rating)"""
    style_coefficients: pd.Series
    """per style feature, logit units per standard deviation (empty without style control)"""
    replicates: np.ndarray
    """(B, M) bootstrap ratings, models in `ratings_order` order"""
    ratings_order: list[str]


# ----- the fit: soft-label logistic regression on a sparse design -----

def _design(a: np.ndarray, b: np.ndarray, n_models: int, style: np.ndarray | None) -> sp.csr_matrix:
    """(R, M [+ K]): +1 in b's column, −1 in a's, then the style covariates."""
    R = len(a)
    rows = np.concatenate([np.arange(R), np.arange(R)])
    X = sp.csr_matrix((np.concatenate([np.ones(R), -np.ones(R)]), (rows, np.concatenate([b, a]))),
                      shape=(R, n_models))
    return X if style is None else sp.hstack([X, sp.csr_matrix(style)], format="csr")


def _newton(X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, free: np.ndarray, beta0: np.ndarray,
            tol: float = 1e-12, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Maximise Σ w CE-likelihood over the `free` coordinates (the anchor's stays 0). Returns (β, H_free)."""
    beta = beta0.copy()
    Xf = X[:, free]
    H = None
    for _ in range(max_iter):
        z = X @ beta
        s = sigmoid(z)
        g = Xf.T @ (w * (s - y))
        H = (Xf.T @ Xf.multiply((w * s * (1 - s))[:, None])).toarray()
        step = _spd_solve(H + 1e-12 * np.eye(len(g)), g)
        step *= min(1.0, 4.0 / max(np.abs(step).max(), 1e-300))  # a damped first step from far away
        beta[free] -= step
        if np.abs(step).max() < tol:
            break
    return beta, H


def _spd_solve(H: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve H x = b (b: (n,) or (n, k)) for a symmetric positive-definite H by Cholesky written with numpy's
    elementwise operations. Why not LAPACK: its threaded LU/Cholesky of a 200×200 matrix, cheap on an idle
    machine, took 0.1–0.7 s per call on a busy 2-core one (threads waiting for cores); this takes milliseconds
    either way. Large systems go to scipy."""
    n = len(H)
    if n > 600:
        from scipy.linalg import cho_factor, cho_solve

        return cho_solve(cho_factor(H, check_finite=False), b, check_finite=False)
    L = np.array(H, dtype=float)
    for j in range(n):  # right-looking: column j, then a rank-1 update of the trailing block
        if L[j, j] <= 0:
            return np.linalg.lstsq(H, b, rcond=None)[0]
        L[j, j] = np.sqrt(L[j, j])
        L[j + 1:, j] /= L[j, j]
        L[j + 1:, j + 1:] -= np.multiply.outer(L[j + 1:, j], L[j + 1:, j])
    y = np.array(b, dtype=float)
    for j in range(n):  # L y = b, column by column
        y[j] /= L[j, j]
        y[j + 1:] -= np.multiply.outer(L[j + 1:, j], y[j])
    for j in range(n - 1, -1, -1):  # Lᵀ x = y
        y[j] /= L[j, j]
        y[:j] -= np.multiply.outer(L[j, :j], y[j])
    return y


def _one_step(beta: np.ndarray, H: np.ndarray, grads: np.ndarray, anchor_i: int) -> np.ndarray:
    """(B, P) one Newton step from `beta` per resample gradient (rows of `grads`, (B, P)); H over the free
    coordinates (all but the anchor)."""
    free = np.flatnonzero(np.arange(len(beta)) != anchor_i)
    boot = np.tile(beta, (len(grads), 1))
    boot[:, free] -= _spd_solve(H, grads[:, free].T).T
    return boot


def _pair_newton(a: np.ndarray, b: np.ndarray, n: np.ndarray, s: np.ndarray, M: int, anchor_i: int,
                 theta0: np.ndarray, tol: float = 1e-12, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method for plain Bradley–Terry on aggregated pairs: n = how many annotations compare a with b,
    s = their sum of P(b better). The Hessian is assembled with bincounts (4 entries per pair), not a sparse
    product. Returns (θ with θ_anchor = 0, Hessian over the other models)."""
    theta = theta0.copy()
    free = np.flatnonzero(np.arange(M) != anchor_i)
    diag, off = a * M + a, a * M + b
    H = None
    for _ in range(max_iter):
        p = sigmoid(theta[b] - theta[a])
        r = n * p - s  # ∂(−log-lik)/∂θ_b per pair (and minus that for θ_a)
        g = np.bincount(b, weights=r, minlength=M) - np.bincount(a, weights=r, minlength=M)
        v = n * p * (1 - p)
        H_full = (np.bincount(diag, weights=v, minlength=M * M) + np.bincount(b * M + b, weights=v, minlength=M * M)
                  - np.bincount(off, weights=v, minlength=M * M)
                  - np.bincount(b * M + a, weights=v, minlength=M * M)).reshape(M, M)
        H = H_full[np.ix_(free, free)]
        step = _spd_solve(H + 1e-12 * np.eye(len(free)), g[free])
        step *= min(1.0, 4.0 / max(np.abs(step).max(), 1e-300))
        theta[free] -= step
        if np.abs(step).max() < tol:
            break
    return theta, H


def bradley_terry(source, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, style: bool = False,
                  anchor: str | None = None, ties: str = "half", bootstrap: str = "one-step") -> BTResult:
    """Bradley–Terry (Elo-scale) ratings of every model in the annotations (generator_1 and generator_2), with
    bootstrap intervals over instructions; see the module docstring."""
    if ties not in ("half", "drop"):
        raise FarmError(f"ties must be 'half' or 'drop', got '{ties}'")
    if bootstrap not in ("one-step", "exact"):
        raise FarmError(f"bootstrap must be 'one-step' or 'exact', got '{bootstrap}'")
    frame = to_frame(source)
    keep = frame["p_output_2"].notna() & (frame["generator_1"] != frame["generator_2"]) & (frame["generator_1"] != "")
    if ties == "drop":
        keep &= frame["p_output_2"] != 0.5
    frame = frame[keep]
    if frame.empty:
        raise FarmError("no pairwise annotation between two named models (generator_1 and generator_2)")
    models = sorted(set(pd.unique(frame["generator_1"])) | set(pd.unique(frame["generator_2"])))
    a, _ = codes(frame["generator_1"], models)
    b, _ = codes(frame["generator_2"], models)
    _check_connected(a, b, models)
    cluster, _ = codes(key_strings(frame), None)
    y = frame["p_output_2"].to_numpy(float)
    S = style_features(frame["output_1"], frame["output_2"]) if style else None
    M = len(models)
    anchor_i = 0 if anchor is None else _index(models, anchor)
    reps = np.full((0, M), np.nan)
    n_clusters = int(cluster.max()) + 1
    W = bootstrap_counts(n_clusters, n_boot, seed) if n_boot > 0 else None  # (B, N)
    if S is None:  # no per-annotation covariates: the likelihood depends on each pair's count and sum of p
        unit_key, unit = np.unique((cluster.astype(np.int64) * M + a) * M + b, return_inverse=True)
        unit = unit.ravel()
        w_u, s_u = np.bincount(unit).astype(float), np.bincount(unit, weights=y)
        c_u, a_u, b_u = unit_key // (M * M), (unit_key // M) % M, unit_key % M
        pair_key, pair = np.unique(a_u * M + b_u, return_inverse=True)
        pair = pair.ravel()
        a_p, b_p = pair_key // M, pair_key % M
        theta, H = _pair_newton(a_p, b_p, np.bincount(pair, weights=w_u), np.bincount(pair, weights=s_u), M,
                                anchor_i, np.zeros(M))
        if W is not None and bootstrap == "one-step":
            resid = w_u * sigmoid(theta[b_u] - theta[a_u]) - s_u  # (U,) each unit's gradient wrt θ_b
            G = (np.bincount(c_u * M + b_u, weights=resid, minlength=n_clusters * M)
                 - np.bincount(c_u * M + a_u, weights=resid, minlength=n_clusters * M)).reshape(n_clusters, M)
            boot = _one_step(theta, H, W @ G, anchor_i)
        elif W is not None:
            boot = np.stack([_pair_newton(a_p, b_p, np.bincount(pair, weights=w_u * Wb[c_u], minlength=len(a_p)),
                                          np.bincount(pair, weights=s_u * Wb[c_u], minlength=len(a_p)), M,
                                          anchor_i, theta, tol=1e-9)[0] for Wb in W])
        beta = theta
    else:
        varies = np.abs(S).max(axis=0) > 0  # a feature no annotation varies in (no markdown at all) is left out
        X = _design(a, b, M, S[:, varies])
        free = np.flatnonzero(np.arange(X.shape[1]) != anchor_i)
        beta, H = _newton(X, y, np.ones(len(y)), free, np.zeros(X.shape[1]))
        if W is not None and bootstrap == "one-step":
            resid = sigmoid(X @ beta) - y
            C = sp.csr_matrix((resid, (cluster, np.arange(len(y)))), shape=(n_clusters, len(y)))
            G = (C @ X).toarray()  # (N, M + K) each instruction's gradient at the fit
            boot = _one_step(beta, H, W @ G, anchor_i)
        elif W is not None:
            boot = np.stack([_newton(X, y, Wb[cluster], free, beta, tol=1e-9)[0] for Wb in W])

    def elo(theta: np.ndarray) -> np.ndarray:  # (…, M) logits → ratings
        ref = theta[..., anchor_i:anchor_i + 1] if anchor is not None else theta.mean(-1, keepdims=True)
        return INIT + ELO_PER_LOGIT * (theta - ref)

    if W is not None:
        reps = elo(boot[:, :M])
    ratings = elo(beta[:M])
    lo, hi = percentile_interval(reps, level) if n_boot > 0 else (np.full(M, np.nan), np.full(M, np.nan))
    n_ann = np.bincount(a, minlength=M) + np.bincount(b, minlength=M)
    table = pd.DataFrame({"rating": ratings, "rating_ci_low": lo, "rating_ci_high": hi,
                          "n_annotations": n_ann.astype(int)}, index=pd.Index(models))
    coefs = pd.Series(dtype=float, name="style_coefficient")
    if style:
        coefs = pd.Series(0.0, index=list(STYLE_FEATURES), name="style_coefficient")
        coefs[varies] = beta[M:]
    return BTResult(table.sort_values("rating", ascending=False, kind="stable"), coefs, reps, models)


def _index(models: list[str], name: str) -> int:
    if name not in models:
        raise FarmError(f"anchor model '{name}' is not in the annotations", hint=f"models: {models[:10]}…")
    return models.index(name)


def _check_connected(a: np.ndarray, b: np.ndarray, models: list[str]) -> None:
    """Ratings compare only within a connected comparison graph."""
    from scipy.sparse.csgraph import connected_components

    M = len(models)
    g = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(M, M))
    n, label = connected_components(g, directed=False)
    if n > 1:
        lonely = [models[i] for i in np.flatnonzero(label != label[0])][:5]
        raise FarmError(f"the models fall into {n} groups never compared with each other",
                        hint=f"e.g. {lonely} never meet {models[0]}'s group; ratings across groups mean nothing")
