"""Length-controlled win rate: a logistic GLM on the length difference, in the spirit of AlpacaEval 2 LC.

For model m against the baseline, on instruction i (Dubois et al. 2024, "Length-Controlled AlpacaEval"):

    logit P(m better on i) = θ_m + β_m · tanh(Δ_i / σ_m) + γ_m · d_i,     β_m = β + δ_m

Δ_i = len(model output) − len(baseline output) in characters, σ_m the sample std of Δ over m's annotations,
d_i an instruction difficulty. The LC win rate asks "what if the lengths were equal": Δ = 0, so

    LC_m = 100 × mean_i σ(θ_m + γ_m · d_i)

The fit maximises the log-likelihood with the judge's p as a soft target (a weighted judge's 0.73 is a target
of 0.73, a draw is 0.5), as AlpacaEval does.

Where ours departs from AlpacaEval's `metrics/glm_winrate.py` (see docs/evaluation.md for the measured effect):
1. Instruction difficulty d_i: AlpacaEval downloads a fixed table fitted once on its whole leaderboard. We fit it
   on the annotations at hand, jointly with every model's θ, β (logit = θ_m + β_m x + d_i, ridge on d) when at
   least `min_models_for_difficulty` models share the instructions; otherwise the term is dropped. So a model's
   LC depends a little on which other models are in the same leaderboard. A fixed table can be passed instead.
2. No pooling with "gamed" baselines: AlpacaEval adds the annotations of a verbose and a concise version of the
   baseline (weight 0.1 each, intercept fixed at 0), which pins the length slope. We have no such data in
   general; instead each model's slope β_m is shrunk toward the slope β shared by all models in the leaderboard
   (ridge `ridge_slope` on the deviation δ_m), so a model whose lengths barely vary (every output far shorter
   than the baseline's) borrows the slope the others show instead of extrapolating its own.
3. A fixed small L2 penalty instead of L1 with its strength chosen by 5-fold cross-validation; Newton's method
   on all models at once instead of liblinear (no scikit-learn dependency).
4. Δ is model − baseline (theirs is baseline − model): only the sign of β changes; LC is the same.
5. The mean is over the model's annotated instructions with a valid preference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def fit_groups(y: np.ndarray, F: np.ndarray, group: np.ndarray, n_groups: int, ridge: Sequence[float], *,
               offset: np.ndarray | float = 0.0, prior: np.ndarray | float = 0.0, w0: np.ndarray | None = None,
               iters: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Soft-label logistic regressions, one per group, fitted together by Newton's method.

    For each group g: minimise Σ_{r in g} CE(y_r, σ(offset_r + F_r · w_g)) + ½ Σ_p ridge_p (w_gp − prior_gp)²
    (CE with a soft target: −y log σ − (1 − y) log(1 − σ)). Shapes: y (R,), F (R, P), group (R,) ints in
    [0, n_groups); returns w (n_groups, P). Each step solves the (n_groups, P, P) Newton systems at once; a step
    longer than 4 is shortened (Newton can overshoot when a group's outcomes are nearly all 0 or all 1).

    >>> y = np.array([1.0, 0.0, 1.0, 1.0])  # mean 0.75 → intercept logit(0.75) = log 3 with (almost) no ridge
    >>> w = fit_groups(y, np.ones((4, 1)), np.zeros(4, int), 1, ridge=[1e-12])
    >>> round(float(w[0, 0]), 4), round(float(np.log(3)), 4)
    (1.0986, 1.0986)
    """
    R, P = F.shape
    ridge = np.asarray(ridge, dtype=float)
    w = np.zeros((n_groups, P)) if w0 is None else np.array(w0, dtype=float)
    outer = (F[:, :, None] * F[:, None, :]).reshape(R, P * P)

    def per_group(values: np.ndarray) -> np.ndarray:  # (R, Q) → (n_groups, Q) sums
        return np.stack([np.bincount(group, weights=values[:, q], minlength=n_groups)
                         for q in range(values.shape[1])], axis=1)

    for _ in range(iters):
        s = _sigmoid(offset + np.einsum("rp,rp->r", F, w[group]))
        grad = per_group((s - y)[:, None] * F) + ridge * (w - prior)  # (G, P)
        hess = per_group((s * (1 - s))[:, None] * outer).reshape(n_groups, P, P) + np.diag(ridge)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        step *= np.minimum(1.0, 4.0 / np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-300))
        w -= step
        if np.abs(step).max() < tol:
            break
    return w


def _design(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """Valid rows with model index m, instruction index k, target y and x = tanh(Δ/σ_m)."""
    from farm.eval.winrate import KEY_SEP, _codes, _key_strings

    df = frame.loc[frame["p_output_2"].notna(), ["generator_2", "instruction", "input", "output_1", "output_2",
                                                  "p_output_2"]]
    m, models = _codes(df["generator_2"], None)
    k, key_strings = _codes(_key_strings(df), None)
    delta = (df["output_2"].str.len() - df["output_1"].str.len()).to_numpy(float)
    n = np.bincount(m, minlength=len(models)).astype(float)
    mean = np.bincount(m, weights=delta, minlength=len(models)) / np.maximum(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.bincount(m, weights=(delta - mean[m]) ** 2, minlength=len(models)) / (n - 1))  # ddof 1
    sd_row = sd[m]
    x = np.tanh(np.divide(delta, sd_row, out=np.zeros_like(delta), where=np.isfinite(sd_row) & (sd_row > 0)))
    out = pd.DataFrame({"m": m, "k": k, "x": x, "p_output_2": df["p_output_2"].to_numpy(float)})
    return out, models, [tuple(s.split(KEY_SEP, 1)) for s in key_strings]


def instruction_difficulty(frame: pd.DataFrame, ridge: float = 0.2, ridge_model: float = 1e-3,
                           max_rounds: int = 500, tol: float = 1e-7) -> pd.Series:
    """d_i fitted jointly with each model's intercept and length slope: logit p = θ_m + β_m x + d_i, ridge on d,
    d centred (a constant shift of d is absorbed by the θ's, and by the LC fit's intercepts).

    Block coordinate descent: Newton on every model's (θ, β) given d, then on every d_i given the models,
    until neither moves. Returns a Series indexed by (instruction, input); positive = the models do better
    than usual there (an easy instruction for the models, a hard one for the baseline).
    """
    df, models, keys = _design(frame)
    y, m, k, x = (df[c].to_numpy() for c in ("p_output_2", "m", "k", "x"))
    F_model, F_instr = np.stack([np.ones_like(x), x], axis=1), np.ones((len(x), 1))
    w, d = np.zeros((len(models), 2)), np.zeros(len(keys))
    for _ in range(max_rounds):
        w_new = fit_groups(y, F_model, m, len(models), [ridge_model] * 2, offset=d[k], w0=w, iters=3)
        base = w_new[m, 0] + w_new[m, 1] * x
        d_new = fit_groups(y, F_instr, k, len(keys), [ridge], offset=base, w0=d[:, None], iters=3)[:, 0]
        d_new -= d_new.mean()
        moved = max(np.abs(w_new - w).max(), np.abs(d_new - d).max())
        w, d = w_new, d_new
        if moved < tol:
            break
    return pd.Series(d, index=pd.MultiIndex.from_tuples(keys, names=["instruction", "input"]),
                     name="instruction_difficulty")


def length_controlled_winrates(frame: pd.DataFrame, difficulty: pd.Series | str | None = "auto",
                               ridge: float = 1e-3, ridge_slope: float = 10.0,
                               min_models_for_difficulty: int = 3, max_rounds: int = 500,
                               tol: float = 1e-7) -> pd.DataFrame:
    """One row per model: `length_controlled_winrate` (×100), its delta-method `lc_standard_error`, and the
    fitted `lc_intercept`, `lc_length_coef` (β_m: > 0 means the judge rewards this model's extra length) and
    `lc_difficulty_coef` (γ).

    `difficulty`: "auto" (fit on these annotations when ≥ `min_models_for_difficulty` models), None (no
    difficulty term), or a Series indexed by (instruction, input) such as `instruction_difficulty(...)` of a
    bigger leaderboard (instructions it lacks get 0).
    """
    from farm.eval.winrate import to_frame

    frame = to_frame(frame)
    df, models, keys = _design(frame)
    if not models:
        return pd.DataFrame(columns=["length_controlled_winrate", "lc_standard_error", "lc_intercept",
                                     "lc_length_coef", "lc_difficulty_coef"], dtype=float)
    if isinstance(difficulty, str):
        if difficulty != "auto":
            raise ValueError(f"difficulty must be 'auto', None or a Series, got {difficulty!r}")
        difficulty = instruction_difficulty(frame) if len(models) >= min_models_for_difficulty else None
    if difficulty is None:
        d = np.zeros(len(keys))
    else:
        d = pd.Series(difficulty).reindex(pd.MultiIndex.from_tuples(keys)).fillna(0.0).to_numpy(float)
    dk = d[df["k"].to_numpy()]
    y, m, x, n = df["p_output_2"].to_numpy(), df["m"].to_numpy(), df["x"].to_numpy(), len(models)
    F = np.stack([np.ones_like(x), x, dk], axis=1)  # (R, 3): intercept, length, difficulty
    # β_m = β + δ_m, ridge `ridge_slope` on δ_m and `ridge` on β: alternate the models' fits given β with the
    # exact β given the models (β = ridge_slope Σ β_m / (ridge_slope M + ridge))
    w, shared = np.zeros((n, 3)), 0.0
    for _ in range(max_rounds):
        w_new = fit_groups(y, F, m, n, [ridge, ridge_slope, ridge], prior=np.array([0.0, shared, 0.0]), w0=w,
                           iters=3)
        shared_new = ridge_slope * w_new[:, 1].sum() / (ridge_slope * n + ridge)
        moved = max(np.abs(w_new - w).max(), abs(shared_new - shared))
        w, shared = w_new, shared_new
        if moved < tol:
            break
    theta, beta, gamma = w[:, 0], w[:, 1], w[:, 2]
    # Δ = 0: the win rate each model would have if its outputs were as long as the baseline's
    lc = pd.Series(_sigmoid(theta[m] + gamma[m] * dk)).groupby(m).mean().to_numpy() * 100
    se = _lc_standard_errors(df["p_output_2"].to_numpy(), m, x, dk, theta, beta, gamma,
                             np.array([ridge, ridge_slope, ridge]))
    return pd.DataFrame({"length_controlled_winrate": lc, "lc_standard_error": se, "lc_intercept": theta,
                         "lc_length_coef": beta, "lc_difficulty_coef": gamma}, index=pd.Index(models))


def _lc_standard_errors(y: np.ndarray, m: np.ndarray, x: np.ndarray, d: np.ndarray, theta: np.ndarray,
                        beta: np.ndarray, gamma: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """Delta-method SE (×100) of each model's LC win rate, with a sandwich covariance of its (θ, β, γ).

    Per model: features F = [1, x, d] (R, 3); H = Σ s(1−s) F Fᵀ + diag(ridge) (the penalised Fisher
    information), B = Σ (s − y)² F Fᵀ (the scores' spread, right for soft targets), Cov = H⁻¹ B H⁻¹;
    LC = mean σ(θ + γ d) has gradient g = mean σ'(θ + γ d) · [1, 0, d], so SE = √(gᵀ Cov g). The difficulty
    estimate and the slope shared between models are taken as fixed, so this is a slight under-estimate.
    """
    n = len(theta)
    F = np.stack([np.ones_like(x), x, d], axis=1)  # (R, 3)
    s = _sigmoid(theta[m] + beta[m] * x + gamma[m] * d)
    outer = F[:, :, None] * F[:, None, :]  # (R, 3, 3)

    def per_model(w: np.ndarray) -> np.ndarray:  # Σ_r w_r F_r F_rᵀ for each model → (M, 3, 3)
        flat = outer.reshape(len(x), 9) * w[:, None]
        return np.stack([np.bincount(m, weights=flat[:, j], minlength=n) for j in range(9)], 1).reshape(n, 3, 3)

    H = per_model(s * (1 - s)) + np.diag(ridge)
    B = per_model((s - y) ** 2)
    Hinv = np.linalg.pinv(H)
    cov = Hinv @ B @ Hinv
    s0 = _sigmoid(theta[m] + gamma[m] * d)
    slope = s0 * (1 - s0)
    count = np.bincount(m, minlength=n)
    g = np.stack([np.bincount(m, weights=slope, minlength=n), np.zeros(n),
                  np.bincount(m, weights=slope * d, minlength=n)], 1) / np.maximum(count, 1)[:, None]  # (M, 3)
    return np.sqrt(np.einsum("mi,mij,mj->m", g, cov, g)) * 100
