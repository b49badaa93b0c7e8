"""AlpacaEval's own LC reference, rebuilt from the public files of an alpaca_eval checkout (nothing downloaded).

    python -m farm.eval.cli_lc_reference --alpaca-eval ~/alpaca_eval     # rebuilds farm/eval/data/lc_reference.json

AlpacaEval's `glm_winrate.py` fits every model (whatever the judge or baseline) with two fixed things it
downloads from its Hugging Face dataset: `instruction_difficulty.csv` (one d per instruction, fitted jointly on
its AlpacaEval 2 leaderboard) and `df_gamed.csv` (the GPT-4 Turbo judge's verdicts on verbose and concise
rewrites of gpt4_1106_preview, its baseline, joined to every fit with weight 0.2 / 2 per row). Neither file is
in the git repository; what is, and what this module rebuilds them from:

1. **Difficulty.** A joint fit (`farm.eval.lc_reference.joint_fit`) on the AlpacaEval 2 annotation files of
   `results/*/weighted_alpaca_eval_gpt4_turbo/annotations.json` (gpt4_gamed left out: it stays a check) gives
   d_raw per instruction. AlpacaEval's table has another scale, so d = a + b · d_raw, with (a, b) chosen so that
   the published per-model weights (`metrics/weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/
   baseline_gpt4_1106_preview.csv`: β, γ, θ of ~200 models) reproduce the published LC through AlpacaEval's
   own formula LC_m = 100 · mean_i σ(θ_m + γ_m d_i) (least squares over the models in both files).
2. **Gamed rows.** The verbose and concise rewrites' outputs are public (`results/gpt4_1106_preview_verbose/`,
   `_concise/model_outputs.json`), their verdicts are not. Each row gets x = tanh(Δ / sd(Δ)) from the real
   lengths against gpt4_1106_preview's outputs and, as its target, the published weights' prediction for that
   rewrite: p = σ(β_g x + γ_g d + θ_g). A logistic fit depends on its targets only through Σ w p F, so targets
   that reproduce the verdicts' moments give the same fits; these reproduce them as far as the rewrite's own
   published fit does.

Nothing here is fitted to AlpacaEval 1: its files (../shared/data and the checkout's `alpaca_eval_gpt4`
folders) only test the result (bench/bench_lc.py). The reference applies to every baseline and judge on the
AlpacaEval instructions, as AlpacaEval's does (`any_baseline`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from farm.errors import FarmError
from farm.eval.frames import KEY_SEP, to_frame
from farm.eval.glm import sigmoid
from farm.eval.lc_reference import DEFAULT_RIDGE, LCReference, instruction_hash, joint_fit, length_features

JUDGE = "weighted_alpaca_eval_gpt4_turbo"
BASELINE = "gpt4_1106_preview"
GAMED = ("gpt4_1106_preview_verbose", "gpt4_1106_preview_concise")
WEIGHTS = f"src/alpaca_eval/metrics/weights/{JUDGE}/length_controlled_v1/baseline_{BASELINE}.csv"
LEADERBOARD = f"src/alpaca_eval/leaderboards/data_AlpacaEval_2/{JUDGE}_leaderboard.csv"
WEIGHT_COLUMNS = {"np.tanh(std_delta_len)": "beta", "instruction_difficulty": "gamma",
                  "not_gamed_baseline.astype(float)": "theta"}


def _need(path: Path) -> Path:
    if not path.is_file() or path.stat().st_size == 0:
        raise FarmError("file missing from the alpaca_eval checkout (or empty: a large file not fetched)", file=path)
    return path


def read_weights(path: Path) -> pd.DataFrame:
    """The published per-model GLM weights as columns beta, gamma, theta."""
    w = pd.read_csv(_need(path), index_col=0)
    missing = set(WEIGHT_COLUMNS) - set(w.columns)
    if missing:
        raise FarmError(f"not an AlpacaEval weights file: columns {sorted(missing)} missing", file=path)
    return w.rename(columns=WEIGHT_COLUMNS)[["beta", "gamma", "theta"]].astype(float)


def _outputs(path: Path) -> dict[str, str]:
    """instruction + KEY_SEP + input → output of a model_outputs.json."""
    rows = json.loads(_need(path).read_text(encoding="utf-8"))
    return {r["instruction"] + KEY_SEP + (r.get("input") or ""): r["output"] for r in rows}


def fit_scale(d_raw: np.ndarray, weights: pd.DataFrame, published_lc: pd.Series) -> dict:
    """(a, b) of d = a + b · d_raw minimising the squared error of 100 · mean_i σ(θ_m + γ_m d_i) against the
    published LC over the models both tables have (the baseline's all-zero row left out)."""
    common = weights.index.intersection(published_lc.dropna().index)
    w = weights.loc[common]
    w = w[(w["gamma"] != 0) | (w["theta"] != 0)]
    if len(w) < 3:
        raise FarmError("fewer than 3 models have both published weights and a published LC")
    theta, gamma, target = w["theta"].to_numpy()[:, None], w["gamma"].to_numpy()[:, None], published_lc[w.index]

    def predicted(ab: np.ndarray) -> np.ndarray:
        return 100 * sigmoid(theta + gamma * (ab[0] + ab[1] * d_raw)[None]).mean(1)

    def loss(ab: np.ndarray) -> float:
        return float(np.mean((predicted(ab) - target.to_numpy()) ** 2))

    res = minimize(loss, np.array([0.0, 1.0]), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
    return {"a": float(res.x[0]), "b": float(res.x[1]), "lc_rmse": float(np.sqrt(res.fun)),
            "lc_rmse_unscaled": float(np.sqrt(loss(np.array([0.0, 1.0])))), "n_models": int(len(w))}


def gamed_rows(baseline_out: dict[str, str], gamed_out: dict[str, str], d: dict[str, float],
               w: pd.Series) -> dict:
    """One gamed baseline: per instruction the hash, x from the real lengths, p from the published weights w."""
    keys = [k for k in baseline_out if k in gamed_out]
    x = length_features(pd.Series([baseline_out[k] for k in keys]), pd.Series([gamed_out[k] for k in keys]))
    hashes = [instruction_hash(k) for k in keys]
    dd = np.array([d.get(h, 0.0) for h in hashes])
    p = sigmoid(w["beta"] * x + w["gamma"] * dd + w["theta"])
    return {"keys": hashes, "x": [round(float(v), 6) for v in x], "p": [round(float(v), 6) for v in p]}


def build_alpaca_eval_reference(checkout: str | Path, *, name: str = "alpaca_eval",
                                exclude: tuple[str, ...] = ("gpt4_gamed",), ridge: float = DEFAULT_RIDGE,
                                source: str = "") -> LCReference:
    """The reference from an alpaca_eval checkout (`checkout` holds `results/` and `src/alpaca_eval/`)."""
    root = Path(checkout).expanduser()
    files = [p for p in sorted(root.glob(f"results/*/{JUDGE}/annotations.json")) if p.stat().st_size > 0]
    if not files:
        raise FarmError(f"no AlpacaEval 2 annotation files (results/*/{JUDGE}/annotations.json)", file=root,
                        hint="give the root of an alpaca_eval clone (it holds results/ and src/alpaca_eval/)")
    frame = to_frame([str(p) for p in files], name_from="file")
    frame = frame[~frame["generator_2"].isin(exclude)]
    if frame["generator_2"].nunique() < 3:
        raise FarmError(f"fewer than 3 annotation files under {root}/results/*/{JUDGE}/", file=root)
    d_raw, per_model = joint_fit(frame, ridge)
    weights = read_weights(root / WEIGHTS)
    published = pd.read_csv(_need(root / LEADERBOARD), index_col=0)["length_controlled_winrate"]
    scale = fit_scale(d_raw.to_numpy(), weights, published)
    d = {instruction_hash(k): round(scale["a"] + scale["b"] * float(v), 6) for k, v in d_raw.items()}
    base = _outputs(root / f"results/{BASELINE}/model_outputs.json")
    gamed = []
    for g in GAMED:
        if g not in weights.index:
            raise FarmError(f"no published weights for the gamed baseline {g}", file=root / WEIGHTS)
        gamed.append({"name": g, **gamed_rows(base, _outputs(root / f"results/{g}/model_outputs.json"), d,
                                              weights.loc[g])})
    return LCReference(name=name, annotator=JUDGE, baseline=BASELINE, slope=float(per_model["beta"].median()),
                       gamed_x=0.0, ridge=ridge, models=sorted(per_model.index),
                       source=source or f"alpaca_eval checkout: {len(per_model)} {JUDGE} annotation files, {WEIGHTS}, "
                                        f"{LEADERBOARD}, model outputs of {BASELINE} and its gamed rewrites",
                       difficulty=d, gamed=gamed, any_baseline=True, calibration=scale)
