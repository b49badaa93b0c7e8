"""Length-controlled win rate as AlpacaEval 2 defines it (Dubois et al. 2024, `metrics/glm_winrate.py`).

Each model is fitted **on its own annotations against the baseline**, alone: its LC does not depend on which
other models share the leaderboard. For model m on instruction i (AlpacaEval's formula
`np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline - 1`):

    logit P(m better on i) = β · tanh(Δ_i / sd(Δ)) + γ · d_i + θ,        Δ_i = len(baseline) − len(model output)

sd(Δ) the sample std of Δ over the model's annotations, d_i the instruction's difficulty from a fixed reference
fit (`farm.eval.lc_reference`, shipped in farm/eval/data/), θ the model's quality. LC asks "what if the lengths
were equal": Δ = 0, so LC = 100 × mean_i σ(θ + γ d_i).

Fitted as AlpacaEval fits it:
- L1 penalty on (β, γ, θ), no separate intercept; its C chosen from scikit-learn's grid (10 values, 1e-4 … 1e4)
  by 5-fold cross-validated log-loss, then refitted on every row (`farm.eval.glm.l1_logistic_cv`);
- the judge's p as a soft target (0.5 for a draw, 0.73 for a weighted judge);
- regularisation toward the baseline: the rows of two "gamed baselines" (the baseline made longer and made
  shorter) join every model's fit with weight 0.2 / 2 each and θ = 0 (they are the baseline's quality), which
  pins the length slope β of a model whose own lengths barely vary.

Where ours departs (docs/evaluation.md has the measured effect):
1. AlpacaEval downloads `df_gamed.csv` (real verdicts on verbose and concise rewrites of its baseline) and a
   difficulty table fitted on its leaderboard, and uses both for every judge and baseline. farm downloads
   nothing: the shipped reference (`alpaca_eval`, `farm.eval.lc_alpaca`) rebuilds both from the public files of
   the alpaca_eval repository (difficulty from its AlpacaEval 2 annotation files, scaled to its published
   weights; gamed rows from the rewrites' real lengths with targets from their published weights) and, like
   AlpacaEval's, applies to any baseline on the AlpacaEval instructions.
2. Instructions are matched by text (instruction + input), not by row position; an instruction the reference
   lacks gets d = 0. Without a matching reference (another instruction set) the difficulty term and the gamed
   rows are dropped: AlpacaEval's `length_controlled_minimal` formula. Fit a reference for your own set with
   `python -m farm.eval.cli_lc_reference` (the one use of a joint fit over many models): it stores the
   difficulty and two pseudo gamed rows per instruction at tanh(std Δ) = ±x₀ whose targets are the reference
   fit's own prediction for a model of the baseline's quality (`LCReference.gamed_rows`).
3. Folds are round-robin over rows, not scikit-learn's GroupKFold order; the optimiser is exact (proximal Newton)
   rather than liblinear stopped at 1e-4.
4. `lc_standard_error` is the estimate's delta-method (sandwich) standard error; AlpacaEval's column of that name
   is the spread of the predicted preferences over instructions (sem), not an uncertainty of the LC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farm.eval.frames import codes, key_strings, to_frame
from farm.eval.glm import l1_logistic, l1_logistic_cv, sigmoid
from farm.eval.lc_reference import GAMED_WEIGHT, LCReference, find_reference, length_features

LC_COLUMNS = ["length_controlled_winrate", "lc_standard_error", "lc_length_coef", "lc_difficulty_coef",
              "lc_intercept", "lc_C", "lc_reference"]


def lc_one_model(rows: pd.DataFrame, reference: LCReference | None, C: float | None = None) -> dict[str, float]:
    """LC of one model from its own annotations (`rows`: output_1 = baseline, output_2 = model, p_output_2;
    invalid p allowed: they count in sd(Δ) and the LC mean, as in AlpacaEval, not in the fit). `C`: a fixed
    L1 strength instead of the cross-validated choice (to see how much the choice moves LC)."""
    x = length_features(rows["output_1"], rows["output_2"])
    y_all = rows["p_output_2"].to_numpy(float)
    d = np.zeros(len(rows)) if reference is None else reference.difficulty_of(key_strings(rows))
    F_all = np.stack([x, d, np.ones(len(rows))], axis=1)  # (R, 3): length, difficulty, quality
    ok = ~np.isnan(y_all)
    F, y, weight = F_all[ok], y_all[ok], np.ones(int(ok.sum()))
    if reference is not None:  # the gamed baselines first, as AlpacaEval concatenates them
        Fg, yg = reference.gamed_rows()
        F, y = np.vstack([Fg, F]), np.concatenate([yg, y])
        weight = np.concatenate([np.full(len(yg), GAMED_WEIGHT / 2), weight])
    if len(y) == 0:
        return dict.fromkeys(LC_COLUMNS[:-1], np.nan)
    w, C = l1_logistic_cv(F, y, weight) if C is None else (l1_logistic(F, y, C, weight), float(C))
    beta, gamma, theta = w
    lc = sigmoid(theta + gamma * d)  # (R,) each instruction at equal length
    return {"length_controlled_winrate": 100 * float(lc.mean()),
            "lc_standard_error": _standard_error(F, y, weight, w, F_all[:, 1], n_model=int(ok.sum())),
            "lc_length_coef": float(beta), "lc_difficulty_coef": float(gamma), "lc_intercept": float(theta),
            "lc_C": C}


def _standard_error(F: np.ndarray, y: np.ndarray, weight: np.ndarray, w: np.ndarray, d: np.ndarray,
                    n_model: int) -> float:
    """Delta-method SE (×100) of LC = mean σ(θ + γ d) with a sandwich covariance of (β, γ, θ): H = the
    objective's curvature over all rows (the gamed rows included), B = the spread of the model's own rows'
    scores (the gamed rows are fixed, not sampled); Cov = H⁻¹ B H⁻¹. The L1 penalty is left out of H (it has
    no curvature), so a coefficient that L1 set to 0 still counts as uncertain: a slight over-estimate."""
    s = sigmoid(F @ w)
    H = (F * (weight * s * (1 - s))[:, None]).T @ F
    own = slice(len(y) - n_model, len(y))
    score = F[own] * (s[own] - y[own])[:, None]  # (n, 3)
    cov = np.linalg.pinv(H) @ (score.T @ score) @ np.linalg.pinv(H)
    s0 = sigmoid(w[2] + w[1] * d)
    g = np.array([0.0, np.mean(s0 * (1 - s0) * d), np.mean(s0 * (1 - s0))])  # ∂LC/∂(β, γ, θ)
    return 100 * float(np.sqrt(max(g @ cov @ g, 0.0)))


def length_controlled_winrates(frame, reference: LCReference | str | None = "auto") -> pd.DataFrame:
    """One row per model (generator_2): `length_controlled_winrate` (×100), `lc_standard_error`, the fitted
    `lc_length_coef` (β; < 0: the judge rewards this model's extra length, AlpacaEval's sign),
    `lc_difficulty_coef` (γ), `lc_intercept` (θ), the chosen `lc_C` and the `lc_reference` used.

    `reference`: "auto" (the shipped reference fitted against this baseline on these instructions, if any:
    `farm.eval.lc_reference.find_reference`), a reference file path or name, an `LCReference`, or None
    (no difficulty term, no gamed rows). Every model is fitted alone, so a model's row is the same whatever
    other models are in `frame`.
    """
    frame = to_frame(frame)
    m, models = codes(frame["generator_2"], None)
    if isinstance(reference, str):
        reference = find_reference(frame, reference)
    rows = []
    for i in range(len(models)):
        own = frame.iloc[np.flatnonzero(m == i)]
        rows.append({**lc_one_model(own, reference), "lc_reference": reference.name if reference else "none"})
    return pd.DataFrame(rows, index=pd.Index(models), columns=LC_COLUMNS)
