"""Length control against AlpacaEval's published LC, with the reference fitted on some models and tested on others.

    python bench/bench_lc.py                                   # ../shared/data; writes docs/evaluation.md block
    python bench/bench_lc.py --external ~/alpaca_eval/results  # also models outside ../shared/data

AlpacaEval 1 (GPT-4 judge, baseline text_davinci_003; 20 annotation files in ../shared/data):
- held-in: the reference (`farm.eval.lc_reference.fit_reference`, what farm ships) fitted on all 20 models, LC of
  each of the 20;
- held-out: leave-models-out cross-fitting: the 20 models in 4 folds (round-robin over sorted names); each
  fold's models get their LC from a reference fitted on the other 15, so none of their annotations shaped it;
- external (with --external: AlpacaEval's `results/<model>/alpaca_eval_gpt4/annotations.json` for models not in
  ../shared/data): LC with the all-20 reference.
AlpacaEval 2 (weighted GPT-4 Turbo judge, baseline gpt4_1106_preview; 4 files): the same, leave-one-out, and
with the shipped AlpacaEval 2 reference (fitted on 57 models of AlpacaEval's results/ folder, gpt4_gamed left
out; 3 of the 4 files here are among the 57).
Each figure is our LC − the published `length_controlled_winrate`: mean |error|, signed mean, largest.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from farm import docblocks
from farm.eval.frames import to_frame
from farm.eval.lc import length_controlled_winrates
from farm.eval.lc_reference import fit_reference

AE1 = "alpaca_eval/annotations_alpaca_eval_gpt4"
AE2 = "alpaca_eval/annotations_weighted_gpt4_turbo"
PUB1 = "alpaca_eval/leaderboards/data_AlpacaEval/alpaca_eval_gpt4_leaderboard.csv"
PUB2 = "alpaca_eval/leaderboards/data_AlpacaEval_2/weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"


def _lc(frame: pd.DataFrame, ref) -> pd.Series:
    return length_controlled_winrates(frame, ref)["length_controlled_winrate"]


def crossfit(frame: pd.DataFrame, n_folds: int) -> tuple[pd.Series, pd.Series]:
    """(held-in LC, held-out LC) per model; folds round-robin over sorted model names."""
    models = sorted(frame["generator_2"].unique())
    held_in = _lc(frame, fit_reference(frame, name="all"))
    held_out = {}
    for f in range(n_folds):
        test = models[f::n_folds]
        ref = fit_reference(frame[~frame["generator_2"].isin(test)], name=f"fold{f}")
        held_out.update(_lc(frame[frame["generator_2"].isin(test)], ref).to_dict())
    return held_in, pd.Series(held_out)[held_in.index]


def _summary(ours: pd.Series, published: pd.Series) -> dict:
    err = (ours - published.reindex(ours.index)).dropna()
    return {"n_models": len(err), "mean_abs": float(err.abs().mean()), "signed_mean": float(err.mean()),
            "max_abs": float(err.abs().max()), "n_positive": int((err > 0).sum()),
            "per_model": {m: [round(float(ours[m]), 3), round(float(published[m]), 3)] for m in err.index}}


def measure(data: Path, external: list[str]) -> dict:
    pub1 = pd.read_csv(data / PUB1, index_col=0)["length_controlled_winrate"]
    pub2 = pd.read_csv(data / PUB2, index_col=0)["length_controlled_winrate"]
    f1 = to_frame(sorted((data / AE1).glob("*.json.gz")))
    f2 = to_frame(sorted((data / AE2).glob("*.json.gz")))
    hi1, ho1 = crossfit(f1, 4)
    hi2, ho2 = crossfit(f2, f2["generator_2"].nunique())
    shipped2 = length_controlled_winrates(f2, "auto")  # the shipped AlpacaEval 2 reference (57 public models)
    out = {"alpaca_eval_1": {"held_in": _summary(hi1, pub1), "held_out": _summary(ho1, pub1)},
           "alpaca_eval_2": {"held_in": _summary(hi2, pub2), "held_out": _summary(ho2, pub2),
                             "shipped": _summary(shipped2["length_controlled_winrate"], pub2),
                             "shipped_reference": shipped2["lc_reference"].iloc[0]},
           "gpt4_gamed": {"published": float(pub2["gpt4_gamed"]), "held_in": float(hi2["gpt4_gamed"]),
                          "held_out": float(ho2["gpt4_gamed"]),
                          "shipped": float(shipped2.loc["gpt4_gamed", "length_controlled_winrate"])}}
    if external:
        fe = to_frame(external, name_from="file")
        fe = fe[~fe["generator_2"].isin(f1["generator_2"].unique())]
        out["alpaca_eval_1"]["external"] = _summary(_lc(fe, fit_reference(f1, name="all")), pub1)
    return out


def _line(name: str, s: dict) -> str:
    return (f"| {name} | {s['n_models']} | {s['mean_abs']:.2f} | {s['signed_mean']:+.2f} | {s['max_abs']:.1f} | "
            f"{s['n_positive']} of {s['n_models']} |")


def markdown(data: dict) -> str:
    a1, g = data["alpaca_eval_1"], data["gpt4_gamed"]
    rows = ["| AlpacaEval 1 models | n | mean \\|LC − published\\| | signed mean | largest | ours higher |",
            "|---|---|---|---|---|---|", _line("held-in (reference fitted on all 20)", a1["held_in"]),
            _line("held-out (4-fold leave-models-out)", a1["held_out"])]
    if "external" in a1:
        rows.append(_line("external (not in ../shared/data; reference on the 20)", a1["external"]))
    a2 = data["alpaca_eval_2"]
    rows += [_line("AlpacaEval 2, reference on these 4 (held-in)", a2["held_in"]),
             _line("AlpacaEval 2, reference on the other 3 (held-out)", a2["held_out"]),
             _line(f"AlpacaEval 2, shipped reference ({a2['shipped_reference']})", a2["shipped"])]
    rows.append(f"\ngpt4_gamed (AlpacaEval 2): published LC {g['published']:.1f}; ours {g['held_in']:.1f} with a "
                f"reference on the 4 files here, {g['held_out']:.1f} on the other 3, {g['shipped']:.1f} with the "
                f"shipped reference (57 public AlpacaEval 2 models, gpt4_gamed not among them).")
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
        external += sorted(p.glob("*/alpaca_eval_gpt4/annotations.json")) if p.is_dir() else [p]
    out = measure(data, [str(p) for p in external])
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    print(markdown(out))
    for name in ("held_in", "held_out", "external"):
        if name in out["alpaca_eval_1"]:
            per = out["alpaca_eval_1"][name]["per_model"]
            print(name, {m: round(a - b, 2) for m, (a, b) in per.items()})
    if not args.no_write:
        docblocks.write_block("docs/evaluation.md", "lc-alpaca-eval", out, "docs/results/lc_alpaca_eval.json",
                              "bench.bench_lc:markdown")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
