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
3. A fixed small L2 penalty instead of L1 with its strength chosen by 5-fold cross-validation; L-BFGS instead
   of liblinear (no scikit-learn dependency).
4. Δ is model − baseline (theirs is baseline − model): only the sign of β changes; LC is the same.
5. The mean is over the model's annotated instructions with a valid preference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def fit_soft_logistic(y: np.ndarray, blocks: Sequence[tuple[np.ndarray, np.ndarray, int, float]],
                      max_iter: int = 500) -> list[np.ndarray]:
    """Minimise Σ_r CE(y_r, σ(z_r)) + Σ_b ridge_b/2 ‖w_b‖² with z_r = Σ_b w_b[index_b[r]] · feature_b[r].

    Each block is (index (R,) ints into its K_b weights, feature (R,), K_b, ridge). Blocks of per-model weights
    keep the models' fits independent while one L-BFGS call fits them all. Returns the weight vector per block.

    >>> y = np.array([1.0, 0.0, 1.0, 1.0])  # mean 0.75 → intercept logit(0.75) = log 3 with no ridge
    >>> (w,) = fit_soft_logistic(y, [(np.zeros(4, int), np.ones(4), 1, 0.0)])
    >>> round(float(w[0]), 4), round(float(np.log(3)), 4)
    (1.0986, 1.0986)
    """
    from scipy.optimize import minimize

    sizes = [k for _, _, k, _ in blocks]
    offsets = np.cumsum([0, *sizes])

    def split(w: np.ndarray) -> list[np.ndarray]:
        return [w[offsets[j]:offsets[j + 1]] for j in range(len(blocks))]

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        ws = split(w)
        z = sum(wb[idx] * feat for wb, (idx, feat, _, _) in zip(ws, blocks))
        # soft-label cross-entropy, stable: y·softplus(−z) + (1−y)·softplus(z)
        loss = float(np.sum(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z)))
        g = _sigmoid(z) - y  # (R,) dloss/dz
        grads = []
        for wb, (idx, feat, k, ridge) in zip(ws, blocks):
            loss += 0.5 * ridge * float(wb @ wb)
            grads.append(np.bincount(idx, weights=g * feat, minlength=k) + ridge * wb)
        return loss, np.concatenate(grads)

    res = minimize(loss_grad, np.zeros(offsets[-1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-8})
    return split(res.x)


def _design(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """Valid rows with model index m, instruction index k, target y and x = tanh(Δ/σ_m)."""
    from farm.eval.winrate import _codes, _key_strings

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
    return out, models, [tuple(s.split("\x00", 1)) for s in key_strings]


def instruction_difficulty(frame: pd.DataFrame, ridge: float = 0.2, ridge_model: float = 1e-3) -> pd.Series:
    """d_i fitted jointly with each model's intercept and length slope: logit p = θ_m + β_m x + d_i (ridge on d).

    Returns a Series indexed by (instruction, input); positive = the models do better than usual there (an easy
    instruction for the models, a hard one for the baseline).
    """
    df, models, keys = _design(frame)
    m, k = df["m"].to_numpy(), df["k"].to_numpy()
    ones = np.ones(len(df))
    _, _, d = fit_soft_logistic(df["p_output_2"].to_numpy(), [
        (m, ones, len(models), ridge_model), (m, df["x"].to_numpy(), len(models), ridge_model),
        (k, ones, len(keys), ridge),
    ])
    return pd.Series(d, index=pd.MultiIndex.from_tuples(keys, names=["instruction", "input"]),
                     name="instruction_difficulty")


def length_controlled_winrates(frame: pd.DataFrame, difficulty: pd.Series | str | None = "auto",
                               ridge: float = 1e-3, ridge_slope: float = 10.0,
                               min_models_for_difficulty: int = 3) -> pd.DataFrame:
    """One row per model: `length_controlled_winrate` (×100) and the fitted `lc_intercept`, `lc_length_coef`
    (β_m: > 0 means the judge rewards this model's extra length) and `lc_difficulty_coef` (γ).

    `difficulty`: "auto" (fit on these annotations when ≥ `min_models_for_difficulty` models), None (no
    difficulty term), or a Series indexed by (instruction, input) such as `instruction_difficulty(...)` of a
    bigger leaderboard (instructions it lacks get 0).
    """
    from farm.eval.winrate import to_frame

    frame = to_frame(frame)
    df, models, keys = _design(frame)
    if not models:
        return pd.DataFrame(columns=["length_controlled_winrate", "lc_intercept", "lc_length_coef",
                                     "lc_difficulty_coef"], dtype=float)
    if isinstance(difficulty, str):
        if difficulty != "auto":
            raise ValueError(f"difficulty must be 'auto', None or a Series, got {difficulty!r}")
        difficulty = instruction_difficulty(frame) if len(models) >= min_models_for_difficulty else None
    if difficulty is None:
        d = np.zeros(len(keys))
    else:
        d = pd.Series(difficulty).reindex(pd.MultiIndex.from_tuples(keys)).fillna(0.0).to_numpy(float)
    dk = d[df["k"].to_numpy()]
    m, x, n = df["m"].to_numpy(), df["x"].to_numpy(), len(models)
    theta, shared, dev, gamma = fit_soft_logistic(df["p_output_2"].to_numpy(), [
        (m, np.ones(len(df)), n, ridge), (np.zeros(len(df), int), x, 1, ridge), (m, x, n, ridge_slope),
        (m, dk, n, ridge),
    ])
    beta = shared[0] + dev
    # Δ = 0: the win rate each model would have if its outputs were as long as the baseline's
    lc = pd.Series(_sigmoid(theta[m] + gamma[m] * dk)).groupby(m).mean().to_numpy() * 100
    return pd.DataFrame({"length_controlled_winrate": lc, "lc_intercept": theta, "lc_length_coef": beta,
                         "lc_difficulty_coef": gamma}, index=pd.Index(models))
