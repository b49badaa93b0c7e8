"""Soft-label logistic regressions: the small solvers behind length control and Bradley–Terry.

A target y ∈ [0, 1] is a judge's P(output_2 better) (0.5 for a draw, 0.73 for a weighted judge); the loss of a
row is the cross-entropy CE(y, s) = −y log s − (1 − y) log(1 − s), s = σ(F·w), times the row's weight.

- `l1_logistic`: minimise ‖w‖₁ + C Σ_r weight_r CE_r, no intercept: the objective of scikit-learn's
  `LogisticRegression(penalty="l1", solver="liblinear", fit_intercept=False, C=C)` that AlpacaEval's length
  control fits (with soft labels through its duplicated-rows trick, which is the same objective). Proximal Newton:
  each step minimises the quadratic model plus ‖·‖₁ by coordinate descent, then backtracks (as liblinear's
  newGLMNET does), but iterates to a tight tolerance instead of liblinear's 1e-4.
- `l1_logistic_cv`: C chosen from AlpacaEval's grid (scikit-learn's default Cs=10, 1e-4 … 1e4) by k-fold
  cross-validated weighted log-loss, then refitted on all rows, as `LogisticRegressionCV(cv=GroupKFold(5))`.
- `fit_groups`: many small ridge-penalised regressions (one per group) fitted together by Newton's method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

C_GRID = np.logspace(-4, 4, 10)  # scikit-learn's LogisticRegressionCV(Cs=10)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def soft_log_loss(y: np.ndarray, z: np.ndarray, weight: np.ndarray | float = 1.0) -> float:
    """Σ weight · CE(y, σ(z)) computed stably from the logits z."""
    return float(np.sum(weight * (np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y))))


def l1_logistic(F: np.ndarray, y: np.ndarray, C: float, weight: np.ndarray | None = None,
                w0: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """argmin_w ‖w‖₁ + C Σ_r weight_r CE(y_r, σ(F_r·w)) for a few features (F: (R, P), P small).

    >>> F = np.ones((4, 1)); y = np.array([1.0, 0.0, 1.0, 1.0])  # unpenalised optimum: logit(0.75) = 1.0986
    >>> round(float(l1_logistic(F, y, C=1e6)[0]), 4), float(l1_logistic(F, y, C=1e-3)[0])
    (1.0986, 0.0)
    """
    R, P = F.shape
    a = np.ones(R) if weight is None else np.asarray(weight, float)
    lam = 1.0 / C  # the same minimiser as C·loss + ‖w‖₁, on the loss's scale

    def objective(w: np.ndarray) -> float:
        return soft_log_loss(y, F @ w, a) + lam * np.abs(w).sum()

    w = np.zeros(P) if w0 is None else np.array(w0, float)
    f = objective(w)
    for _ in range(max_iter):
        s = sigmoid(F @ w)
        g = F.T @ (a * (s - y))  # (P,)
        H = (F * (a * s * (1 - s))[:, None]).T @ F + 1e-12 * np.eye(P)  # (P, P)
        # the quadratic model q(d) = g·d + ½ dᵀHd + λ‖w + d‖₁, minimised one coordinate at a time
        d = np.zeros(P)
        for _sweep in range(100):
            d_old = d.copy()
            for j in range(P):
                rest = g[j] + H[j] @ d - H[j, j] * d[j]  # ∂q/∂d_j without the d_j H_jj term
                u = w[j] - rest / H[j, j]  # unpenalised minimiser of w_j + d_j
                d[j] = np.sign(u) * max(abs(u) - lam / H[j, j], 0.0) - w[j]
            if np.abs(d - d_old).max() < 1e-14:
                break
        decrease = g @ d + lam * (np.abs(w + d).sum() - np.abs(w).sum())
        t = 1.0
        while True:  # backtracking (Armijo on the composite objective)
            f_new = objective(w + t * d)
            if f_new <= f + 0.01 * t * decrease or t < 1e-10:
                break
            t *= 0.5
        w, f_prev, f = w + t * d, f, f_new
        if np.abs(t * d).max() < tol or abs(f_prev - f) < 1e-15 * max(1.0, abs(f)):
            break
    return w


def fold_of_rows(n: int, n_splits: int) -> np.ndarray:
    """Fold of each of n rows: round-robin (0, 1, …, k−1, 0, …), a deterministic partition into k folds of
    sizes differing by at most one (what GroupKFold makes of groups of equal size)."""
    return np.arange(n) % n_splits


def l1_logistic_cv(F: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *,
                   Cs: Sequence[float] = C_GRID, n_splits: int = 5, folds: np.ndarray | None = None
                   ) -> tuple[np.ndarray, float]:
    """`l1_logistic` with C chosen by `n_splits`-fold cross-validation: the C whose fits give the lowest held-out
    weighted log-loss, averaged over the folds (ties: the first, smallest C), then one fit on every row.
    Returns (w, C)."""
    R = len(y)
    a = np.ones(R) if weight is None else np.asarray(weight, float)
    folds = fold_of_rows(R, n_splits) if folds is None else np.asarray(folds)
    scores = np.zeros(len(Cs))
    for k in range(n_splits):
        test = folds == k
        train = ~test
        w = None
        for c, C in enumerate(Cs):  # warm start along the path: the answers do not depend on it
            w = l1_logistic(F[train], y[train], C, a[train], w0=w)
            scores[c] += soft_log_loss(y[test], F[test] @ w, a[test]) / max(test.sum(), 1)
    best = int(np.argmin(scores))
    return l1_logistic(F, y, Cs[best], a), float(Cs[best])


def fit_groups(y: np.ndarray, F: np.ndarray, group: np.ndarray, n_groups: int, ridge: Sequence[float], *,
               offset: np.ndarray | float = 0.0, prior: np.ndarray | float = 0.0, w0: np.ndarray | None = None,
               weight: np.ndarray | float = 1.0, iters: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Soft-label logistic regressions, one per group, fitted together by Newton's method.

    For each group g: minimise Σ_{r in g} weight_r CE(y_r, σ(offset_r + F_r · w_g)) + ½ Σ_p ridge_p (w_gp −
    prior_gp)². Shapes: y (R,), F (R, P), group (R,) ints in [0, n_groups); returns w (n_groups, P). Each step
    solves the (n_groups, P, P) Newton systems at once; a step longer than 4 is shortened (Newton can overshoot
    when a group's outcomes are nearly all 0 or all 1).

    >>> y = np.array([1.0, 0.0, 1.0, 1.0])  # mean 0.75 → intercept logit(0.75) = log 3 with (almost) no ridge
    >>> w = fit_groups(y, np.ones((4, 1)), np.zeros(4, int), 1, ridge=[1e-12])
    >>> round(float(w[0, 0]), 4), round(float(np.log(3)), 4)
    (1.0986, 1.0986)
    """
    R, P = F.shape
    ridge = np.asarray(ridge, dtype=float)
    w = np.zeros((n_groups, P)) if w0 is None else np.array(w0, dtype=float)
    weight = np.broadcast_to(np.asarray(weight, float), (R,))
    outer = (F[:, :, None] * F[:, None, :]).reshape(R, P * P)

    def per_group(values: np.ndarray) -> np.ndarray:  # (R, Q) → (n_groups, Q) sums
        return np.stack([np.bincount(group, weights=values[:, q], minlength=n_groups)
                         for q in range(values.shape[1])], axis=1)

    for _ in range(iters):
        s = sigmoid(offset + np.einsum("rp,rp->r", F, w[group]))
        grad = per_group((weight * (s - y))[:, None] * F) + ridge * (w - prior)  # (G, P)
        hess = per_group((weight * s * (1 - s))[:, None] * outer).reshape(n_groups, P, P) + np.diag(ridge)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        step *= np.minimum(1.0, 4.0 / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-300))
        w -= step
        if np.abs(step).max() < tol:
            break
    return w
