"""Length control against AlpacaEval's published LC: the shipped reference, and a reference fitted on your models.

    python bench/bench_lc.py                                   # ../shared/data; writes docs/evaluation.md block
    python bench/bench_lc.py --external ~/alpaca_eval/results  # also the models of an alpaca_eval checkout

The shipped reference (`alpaca_eval`, farm/eval/lc_alpaca.py) is rebuilt from AlpacaEval 2's public files only
(its annotation files, published per-model weights and LC, the gamed rewrites' outputs); no AlpacaEval 1 file
shaped it, so every AlpacaEval 1 row below is held out:
- AlpacaEval 1 (GPT-4 judge, baseline text_davinci_003): the 20 annotation files of ../shared/data, and with
  --external the checkout's `results/<model>/alpaca_eval_gpt4/annotations.json` for models not among them;
- AlpacaEval 2 (weighted GPT-4 Turbo judge, baseline gpt4_1106_preview): the 4 files of ../shared/data
  (gpt4_gamed, left out of the reference, among them), and with --external the checkout's AlpacaEval 2 files:
  the difficulty was fitted on these, so they are in-sample.
For comparison, the route for another judge or instruction set (`farm.eval.lc_reference.fit_reference`: a joint
fit on your own models, pseudo gamed rows) on the 20 AlpacaEval 1 files: fitted on all 20 (held-in), 4-fold
leave-models-out (held-out), and on the external models.
Each figure is our LC − the published `length_controlled_winrate`: mean |error|, signed mean, largest, how many
above. AlpacaEval 1 models off by more than 2 points are listed with our LC at the next larger C of the grid: AlpacaEval's
cross-validated C sits on a knife edge for some models, where L1 sets θ to 0 at one C and not at the next.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from farm import docblocks
from farm.eval.frames import to_frame
from farm.eval.glm import C_GRID
from farm.eval.lc import lc_one_model, length_controlled_winrates
from farm.eval.lc_reference import find_reference, fit_reference

AE1 = "alpaca_eval/annotations_alpaca_eval_gpt4"
AE2 = "alpaca_eval/annotations_weighted_gpt4_turbo"
PUB1 = "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"
PUB2 = "alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
OFF = 2.0  # points: models further off are listed


def _lc(frame: pd.DataFrame, ref) -> pd.DataFrame:
    return length_controlled_winrates(frame, ref)


def crossfit(frame: pd.DataFrame, n_folds: int) -> tuple[pd.Series, pd.Series, object]:
    """(held-in LC, held-out LC, the all-models reference) per model; folds round-robin over sorted names."""
    models = sorted(frame["generator_2"].unique())
    ref_all = fit_reference(frame, name="all")
    held_in = _lc(frame, ref_all)["length_controlled_winrate"]
    held_out = {}
    for f in range(n_folds):
        test = models[f::n_folds]
        ref = fit_reference(frame[~frame["generator_2"].isin(test)], name=f"fold{f}")
        held_out.update(_lc(frame[frame["generator_2"].isin(test)], ref)["length_controlled_winrate"].to_dict())
    return held_in, pd.Series(held_out)[held_in.index], ref_all


def _summary(ours: pd.Series, published: pd.Series) -> dict:
    err = (ours - published.reindex(ours.index)).dropna()
    return {"n_models": len(err), "mean_abs": float(err.abs().mean()), "signed_mean": float(err.mean()),
            "median": float(err.median()), "max_abs": float(err.abs().max()), "n_positive": int((err > 0).sum()),
            "per_model": {m: [round(float(ours[m]), 3), round(float(published[m]), 3)] for m in err.index}}


def _far_off(frame: pd.DataFrame, table: pd.DataFrame, published: pd.Series, ref) -> list[dict]:
    """Models more than OFF points from the published LC: the C chosen and our LC at the next larger C."""
    out = []
    for m, row in table.iterrows():
        err = row["length_controlled_winrate"] - published.get(m, np.nan)
        if not abs(err) > OFF:
            continue
        bigger = [C for C in C_GRID if C > row["lc_C"] * 1.0001]
        alt = (lc_one_model(frame[frame["generator_2"] == m], ref, C=bigger[0])["length_controlled_winrate"]
               if bigger else np.nan)
        out.append({"model": m, "ours": float(row["length_controlled_winrate"]), "published": float(published[m]),
                    "C": float(row["lc_C"]), "next_C": float(bigger[0]) if bigger else None,
                    "ours_next_C": float(alt)})
    return out


def alpaca_eval_fit(F: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """AlpacaEval's `fit_LogisticRegressionCV` (is_ytrue_proba=True, n_splits=5), re-typed from glm_winrate.py
    for this check: each row twice (label 1 weighted p, label 0 weighted 1 − p), GroupKFold keeping the two
    together, liblinear L1, C from the 10-value grid by the soft log-loss. Needs scikit-learn."""
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    sklearn.set_config(enable_metadata_routing=True)

    def soft_loss(y_true, y_pred, true_prob, true_sample_weight=None):
        t = np.where(y_true == 1, true_prob, 1 - true_prob)
        q = np.clip(y_pred, 1e-15, 1 - 1e-15)
        return -np.mean((t * np.log(q) + (1 - t) * np.log(1 - q)) * true_sample_weight)

    n = len(y)
    prob, w2 = np.concatenate([y, 1 - y]), np.concatenate([weight, weight])
    scorer = make_scorer(soft_loss, response_method="predict_proba", greater_is_better=False
                         ).set_score_request(true_sample_weight=True, true_prob=True)
    model = LogisticRegressionCV(cv=GroupKFold(n_splits=5), scoring=scorer, random_state=123, dual=False,
                                 penalty="l1", solver="liblinear", fit_intercept=False)
    model.set_fit_request(sample_weight=True)
    model.fit(np.vstack([F, F]), np.concatenate([np.ones(n), np.zeros(n)]), sample_weight=prob * w2,
              groups=np.concatenate([np.arange(n), np.arange(n)]), true_sample_weight=w2, true_prob=prob)
    return model.coef_[0]


def sklearn_check(frame: pd.DataFrame, ref) -> dict | None:
    """Largest |our LC − AlpacaEval's fitting code's LC| over the models of `frame` (same rows, same reference)."""
    try:
        import sklearn
    except ImportError:
        return None
    from farm.eval.frames import key_strings
    from farm.eval.glm import sigmoid
    from farm.eval.lc_reference import GAMED_WEIGHT, length_features

    Fg, yg = ref.gamed_rows()
    diffs = {}
    for m, rows in frame.groupby("generator_2"):
        x = length_features(rows["output_1"], rows["output_2"])
        y = rows["p_output_2"].to_numpy(float)
        d = ref.difficulty_of(key_strings(rows))
        ok = ~np.isnan(y)
        F = np.vstack([Fg, np.stack([x, d, np.ones(len(x))], axis=1)[ok]])
        w = alpaca_eval_fit(F, np.concatenate([yg, y[ok]]),
                            np.concatenate([np.full(len(yg), GAMED_WEIGHT / 2), np.ones(int(ok.sum()))]))
        theirs = 100 * float(sigmoid(w[2] + w[1] * d).mean())
        diffs[m] = lc_one_model(rows, ref)["length_controlled_winrate"] - theirs
    return {"n_models": len(diffs), "max_abs": float(max(abs(v) for v in diffs.values())),
            "sklearn": sklearn.__version__}


def _shipped(frame: pd.DataFrame, published: pd.Series) -> dict:
    ref = find_reference(frame)
    table = _lc(frame, ref)
    return {**_summary(table["length_controlled_winrate"], published), "reference": ref.name if ref else "none",
            "far_off": _far_off(frame, table, published, ref)}


def measure(data: Path, external: list[str]) -> dict:
    pub1 = pd.read_csv(data / PUB1, index_col=0)["length_controlled_winrate"]
    pub2 = pd.read_csv(data / PUB2, index_col=0)["length_controlled_winrate"]
    f1 = to_frame(sorted((data / AE1).glob("*.json.gz")))
    f2 = to_frame(sorted((data / AE2).glob("*.json.gz")))
    hi1, ho1, ref20 = crossfit(f1, 4)
    shipped2 = _lc(f2, "auto")
    out = {"shipped": {"ae1_shared": _shipped(f1, pub1), "ae2_shared": _shipped(f2, pub2)},
           "own_reference": {"held_in": _summary(hi1, pub1), "held_out": _summary(ho1, pub1)},
           "gpt4_gamed": {"published": float(pub2["gpt4_gamed"]),
                          "shipped": float(shipped2.loc["gpt4_gamed", "length_controlled_winrate"])}}
    ext1 = [e for e in external if "/alpaca_eval_gpt4/" in e]
    ext2 = [e for e in external if "/weighted_alpaca_eval_gpt4_turbo/" in e]
    if ext1:
        fe = to_frame(ext1, name_from="file")
        fe = fe[~fe["generator_2"].isin(f1["generator_2"].unique())]
        out["shipped"]["ae1_external"] = _shipped(fe, pub1)
        out["own_reference"]["external"] = _summary(_lc(fe, ref20)["length_controlled_winrate"], pub1)
    if ext2:
        fe2 = to_frame(ext2, name_from="file")
        out["shipped"]["ae2_external"] = _shipped(fe2[fe2["generator_2"] != "gpt4_gamed"], pub2)
    ref = find_reference(f1)
    out["calibration"] = {**ref.calibration, "n_difficulty_models": len(ref.models)}
    both = pd.concat([f1, fe]) if ext1 else f1
    check = sklearn_check(both, ref)
    if check:
        out["sklearn_check"] = check
    return out


def _line(name: str, s: dict) -> str:
    return (f"| {name} | {s['n_models']} | {s['mean_abs']:.2f} | {s['signed_mean']:+.2f} | {s['median']:+.2f} | "
            f"{s['max_abs']:.1f} | {s['n_positive']} of {s['n_models']} |")


def markdown(data: dict) -> str:
    sh, own, g = data["shipped"], data["own_reference"], data["gpt4_gamed"]
    rows = ["| LC against the published LC | n | mean \\|error\\| | signed mean | median | largest | ours higher |",
            "|---|---|---|---|---|---|---|",
            _line("**shipped `alpaca_eval`**, AlpacaEval 1, the 20 of ../shared/data (held out)", sh["ae1_shared"])]
    if "ae1_external" in sh:
        rows.append(_line("**shipped**, AlpacaEval 1, other models of the checkout (held out)", sh["ae1_external"]))
    rows.append(_line("shipped, AlpacaEval 2, the 4 of ../shared/data", sh["ae2_shared"]))
    if "ae2_external" in sh:
        rows.append(_line("shipped, AlpacaEval 2, the checkout's files (in-sample: difficulty fitted on them)",
                          sh["ae2_external"]))
    rows += [_line("own reference on the 20 AlpacaEval 1 files, held-in", own["held_in"]),
             _line("own reference, 4-fold leave-models-out (held-out)", own["held_out"])]
    if "external" in own:
        rows.append(_line("own reference on the 20, other AlpacaEval 1 models", own["external"]))
    c = data["calibration"]
    rows.append(f"\nShipped difficulty: joint fit on {c['n_difficulty_models']} AlpacaEval 2 files, scaled "
                f"d = {c['a']:+.3f} + {c['b']:.3f} · d_raw, with which the published weights of {c['n_models']} "
                f"models reproduce the published LC to RMSE {c['lc_rmse']:.2f} points ({c['lc_rmse_unscaled']:.2f} "
                f"unscaled).")
    if "sklearn_check" in data:
        k = data["sklearn_check"]
        rows.append(f"\nAlpacaEval's own fitting code (scikit-learn {k['sklearn']}) on the same rows: largest "
                    f"difference from our LC {k['max_abs']:.3f} points over {k['n_models']} AlpacaEval 1 models.")
    rows.append(f"\ngpt4_gamed (AlpacaEval 2, left out of the shipped reference): published LC {g['published']:.1f}, "
                f"ours {g['shipped']:.1f}.")
    far = [f for k in ("ae1_shared", "ae1_external") if k in sh for f in sh[k]["far_off"]]
    if far:
        rows.append(f"\nAlpacaEval 1 models more than {OFF:.0f} points off: " + "; ".join(
            f"{f['model']} ours {f['ours']:.1f} at C {f['C']:.3g}, {f['ours_next_C']:.1f} at C {f['next_C']:.3g}, "
            f"published {f['published']:.1f}" for f in far) + ".")
    return "\n".join(rows) + "\n"


def main() -> None:
    from farm.data import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="../shared/data (default: farm.data.shared_data_dir())")
    ap.add_argument("--external", nargs="*", default=[],
                    help="AlpacaEval results folders or annotation files of other AlpacaEval 1 models")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    data = Path(args.data) if args.data else shared_data_dir()
    external = []
    for e in args.external:
        p = Path(e)
        external += (sorted(p.glob("*/alpaca_eval_gpt4/annotations.json"))
                     + sorted(p.glob("*/weighted_alpaca_eval_gpt4_turbo/annotations.json"))) if p.is_dir() else [p]
    external = [e for e in external if Path(e).stat().st_size > 0]  # large files a partial clone lacks
    out = measure(data, [str(p) for p in external])
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print(markdown(out))
    for group in ("shipped", "own_reference"):
        for name, s in out[group].items():
            print(group, name, {m: round(a - b, 2) for m, (a, b) in s["per_model"].items()})
    if not args.no_write:
        docblocks.write_block("docs/evaluation.md", "lc-alpaca-eval", out, "docs/results/lc_alpaca_eval.json",
                              "bench.bench_lc:markdown")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
