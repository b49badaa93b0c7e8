"""Benchmark: Bradley–Terry ratings of 200 models from 161,000 pairwise annotations with 1,000 bootstrap resamples
(target < 2 s on 2 cores), and the ratings against a plain logistic regression.

    python bench/bench_bt.py            # writes bench/results/bt.json and its block in bench/RESULTS.md

Synthetic annotations: 200 models with Elo-scale strengths, 805 instructions, 200 annotations per instruction
between random pairs of different models (161,000 in all), a judge that answers with P(b better) from the
strengths, 10% ties. Timed, each the median of --repeats runs of `farm.eval.bt.bradley_terry` on the same
DataFrame (reading the frame included):
1. the fit alone (no interval);
2. the fit + 1,000 one-step bootstrap resamples over instructions (the default);
3. the fit + exact bootstrap (every resample refitted), timed on --exact-boot resamples and scaled;
4. style control (4 covariates) + 1,000 one-step resamples.
Check: the ratings equal a plain logistic regression (scipy `minimize(method="trust-exact")` on the 161,000
rows with a dense ±1 design, no aggregation, polished by dense Newton steps) to 1e-6 Elo; one-step and exact
interval ends are compared.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script

from bench.bench_leaderboard import timed  # noqa: E402
from farm.eval.bt import ELO_PER_LOGIT, bradley_terry  # noqa: E402


def synthetic(n_models: int = 200, n_instructions: int = 805, per_instruction: int = 200, seed: int = 0
              ) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    strength = rng.normal(0, 1.0, n_models)  # logits
    R = n_instructions * per_instruction
    a = rng.integers(0, n_models, R)
    b = (a + rng.integers(1, n_models, R)) % n_models
    pb = 1 / (1 + np.exp(-(strength[b] - strength[a])))
    u = rng.random(R)
    p = np.where(u < pb - 0.05, 1.0, np.where(u < pb + 0.05, 0.5, 0.0))
    lengths = rng.integers(20, 400, size=(2, R))
    names = np.array([f"model_{i:03d}" for i in range(n_models)])
    df = pd.DataFrame({"instruction": np.repeat([f"instruction {i}" for i in range(n_instructions)], per_instruction),
                       "input": "", "output_1": ["x" * int(n) for n in lengths[0]],
                       "output_2": ["- y\n" * int(n // 4) for n in lengths[1]], "generator_1": names[a],
                       "generator_2": names[b], "p_output_2": p})
    return df, strength


def plain_logistic_elo(df: pd.DataFrame, anchor: str | None = None) -> pd.Series:
    """Ratings from scipy's trust-exact on the un-aggregated rows, a dense ±1 design and nothing else (first
    model fixed at 0 while fitting; then the anchor, or the mean, at 1000). Also the reference of the tests."""
    from scipy.optimize import minimize

    models = sorted(set(df["generator_1"]) | set(df["generator_2"]))
    idx = {m: i for i, m in enumerate(models)}
    a = df["generator_1"].map(idx).to_numpy()
    b = df["generator_2"].map(idx).to_numpy()
    y = df["p_output_2"].to_numpy(float)
    X = np.zeros((len(df), len(models)))
    X[np.arange(len(df)), b] += 1
    X[np.arange(len(df)), a] -= 1
    Xf = X[:, 1:]

    def f(t):
        z = Xf @ t
        return np.sum(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (1 - y))

    def g(t):
        return Xf.T @ (1 / (1 + np.exp(-(Xf @ t))) - y)

    def h(t):
        s = 1 / (1 + np.exp(-(Xf @ t)))
        return (Xf * (s * (1 - s))[:, None]).T @ Xf

    t = minimize(f, np.zeros(len(models) - 1), jac=g, hess=h, method="trust-exact", options={"gtol": 1e-12}).x
    for _ in range(3):  # trust-exact stops once f (a sum over 161k rows) no longer resolves its steps: polish
        t = t - np.linalg.solve(h(t), g(t))  # with plain dense Newton steps on the same rows
    theta = np.r_[0.0, t]
    ref = theta[models.index(anchor)] if anchor is not None else theta.mean()
    return pd.Series(1000 + ELO_PER_LOGIT * (theta - ref), index=models)


def measure(repeats: int, exact_boot: int) -> dict:
    df, _ = synthetic()
    load_before = os.getloadavg()
    t_fit, _ = timed(lambda: bradley_terry(df, n_boot=0), repeats)
    t_boot, res = timed(lambda: bradley_terry(df, n_boot=1000), repeats)
    t_style, res_style = timed(lambda: bradley_terry(df, n_boot=1000, style=True), repeats)
    t_exact, res_exact = timed(lambda: bradley_terry(df, n_boot=exact_boot, bootstrap="exact"), 1)
    res_one = bradley_terry(df, n_boot=exact_boot)  # the same resamples, one-step
    ref = plain_logistic_elo(df)
    gap = float((res.ratings["rating"] - ref.reindex(res.ratings.index)).abs().max())
    ends = np.abs(np.r_[res_one.ratings["rating_ci_low"] - res_exact.ratings["rating_ci_low"],
                        res_one.ratings["rating_ci_high"] - res_exact.ratings["rating_ci_high"]])
    width = float((res.ratings["rating_ci_high"] - res.ratings["rating_ci_low"]).median())
    return {"n_models": 200, "n_annotations": len(df), "n_instructions": 805, "n_boot": 1000, "repeats": repeats,
            "seconds_fit": t_fit, "seconds_fit_boot": t_boot, "seconds_style_boot": t_style,
            "seconds_exact_boot_scaled": t_exact * 1000 / exact_boot, "exact_boot_timed": exact_boot,
            "max_abs_diff_vs_plain_logistic": gap, "median_interval_width": width,
            "median_abs_end_diff_one_step_vs_exact": float(np.median(ends)),
            "max_abs_end_diff_one_step_vs_exact": float(ends.max()),
            "style_coefficients": {k: round(float(v), 4) for k, v in res_style.style_coefficients.items()},
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count()}


def markdown(d: dict) -> str:
    ok = "meets" if d["seconds_fit_boot"] < 2 else "misses"
    return "\n".join([
        f"{d['n_models']} models, {d['n_annotations']:,} pairwise annotations on {d['n_instructions']} instructions; "
        f"median of {d['repeats']} runs; load average {d['load_average_before'][0]:.2f} before, "
        f"{d['load_average_after'][0]:.2f} after, on {d['cpus']} CPUs.", "",
        "| Bradley–Terry | seconds |", "|---|---|",
        f"| fit only | {d['seconds_fit']:.2f} |",
        f"| fit + {d['n_boot']:,} one-step bootstrap resamples (default) | {d['seconds_fit_boot']:.2f} |",
        f"| style control + {d['n_boot']:,} one-step resamples | {d['seconds_style_boot']:.2f} |",
        f"| fit + {d['n_boot']:,} exact resamples (timed {d['exact_boot_timed']}, scaled) | "
        f"{d['seconds_exact_boot_scaled']:.1f} |", "",
        f"The default {ok} the 2 s target. Ratings vs a plain logistic regression on the un-aggregated rows: "
        f"largest difference {d['max_abs_diff_vs_plain_logistic']:.1e} Elo. One-step vs exact bootstrap on the "
        f"same {d['exact_boot_timed']} resamples: interval ends differ by {d['median_abs_end_diff_one_step_vs_exact']:.2f} "
        f"Elo (median; largest {d['max_abs_end_diff_one_step_vs_exact']:.2f}) for a median interval width of "
        f"{d['median_interval_width']:.1f}.", ""])


def main() -> None:
    from farm import docblocks

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--exact-boot", type=int, default=50, help="resamples for the (slow) exact bootstrap timing")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    d = measure(args.repeats, args.exact_boot)
    print(markdown(d))
    if not args.no_write:
        docblocks.write_block("bench/RESULTS.md", "bench-bt", d, "bench/results/bt.json", "bench.bench_bt:markdown")


if __name__ == "__main__":
    main()
