"""Benchmark: a 200-model × 805-instruction leaderboard with 1,000 bootstrap resamples (target < 2 s on 2 cores).

    python bench/bench_leaderboard.py                  # ours vs a plain pandas implementation
    /path/to/venv/bin/python bench/bench_leaderboard.py  # where `pip install alpaca-eval` works: also theirs

Compared, each as the median of --repeats runs on the same synthetic annotations (AlpacaEval codes 1/2/0 with
~1% missing, 200 models, 805 instructions):
1. the head-to-head columns without intervals: ours (`leaderboard(n_boot=0)`) vs alpaca_eval's own
   `metrics.get_winrate` applied per model (what its leaderboard does) when importable, and vs a plain pandas
   groupby;
2. with a 1,000-resample bootstrap interval: ours (one (B, N) count matrix shared by all models, two matrix
   products) vs a plain pandas loop over resamples on a pivoted models × instructions table (alpaca_eval has no
   bootstrap interval to time). `--loop-boot` < `--n-boot` times fewer loop resamples and scales the time.
The check at the end verifies that all implementations give the same win rates and that the plain-loop
interval agrees with ours to Monte-Carlo precision. Results go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from farm.eval import leaderboard


def synthetic_annotations(n_models: int = 200, n_instructions: int = 805, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.05, 0.95, n_models)
    rows = []
    instr = [f"instruction {i}" for i in range(n_instructions)]
    base = [f"baseline output {i} " * int(rng.integers(1, 20)) for i in range(n_instructions)]
    for m in range(n_models):
        u = rng.random(n_instructions)
        pref = np.where(u < quality[m] - 0.01, 2.0, np.where(u < quality[m] + 0.01, 1.5, 1.0))
        pref[rng.random(n_instructions) < 0.01] = np.nan
        lengths = rng.integers(20, 2000, n_instructions)
        rows.append(pd.DataFrame({"instruction": instr, "input": "", "output_1": base,
                                  "output_2": ["x" * int(n) for n in lengths], "generator_1": "baseline",
                                  "generator_2": f"model_{m:03d}", "preference": pref}))
    return pd.concat(rows, ignore_index=True)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def pandas_winrates(df: pd.DataFrame) -> pd.Series:
    p = df["preference"].replace({0.0: 1.5}) - 1
    return p.groupby(df["generator_2"]).mean() * 100


def pandas_bootstrap(df: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """A straightforward pandas implementation: pivot to a models × instructions table once, then per resample
    take the sampled columns and average each row (NaN-aware), collecting one Series per resample."""
    rng = np.random.default_rng(seed)
    table = (df.assign(p=df["preference"].replace({0.0: 1.5}) - 1)
             .pivot_table(index="generator_2", columns="instruction", values="p", aggfunc="mean", dropna=False))
    n = table.shape[1]
    boots = [table.iloc[:, rng.integers(0, n, n)].mean(axis=1) * 100 for _ in range(n_boot)]
    b = pd.concat(boots, axis=1)
    return pd.DataFrame({"low": b.quantile(0.025, axis=1), "high": b.quantile(0.975, axis=1)})


def alpaca_eval_winrates(df: pd.DataFrame):
    try:
        from alpaca_eval.metrics import get_winrate
    except ImportError:
        return None

    import logging

    logging.disable(logging.INFO)  # get_winrate logs one line per model with missing preferences

    def run():
        out = {}
        for model, g in df.groupby("generator_2"):
            out[model] = get_winrate(g)["win_rate"]
        return pd.Series(out)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--instructions", type=int, default=805)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-boot", type=int, default=1000,
                    help="resamples of the slow plain pandas loop (its time is scaled to --n-boot)")
    args = ap.parse_args()
    df = synthetic_annotations(args.models, args.instructions)
    print(f"{args.models} models × {args.instructions} instructions = {len(df)} annotations, "
          f"{args.n_boot} bootstrap resamples, median of {args.repeats} runs")

    t_ours0, lb0 = timed(lambda: leaderboard(df, n_boot=0), args.repeats)
    t_ours, lb = timed(lambda: leaderboard(df, n_boot=args.n_boot), args.repeats)
    t_pd, wr_pd = timed(lambda: pandas_winrates(df), args.repeats)
    rows = [("farm leaderboard, no interval", t_ours0), ("plain pandas groupby win rate", t_pd)]
    theirs = alpaca_eval_winrates(df)
    if theirs is not None:
        t_ae, wr_ae = timed(theirs, max(1, args.repeats // 2))
        rows.append(("alpaca_eval metrics.get_winrate per model", t_ae))
        assert np.allclose(wr_ae.loc[lb0.index].to_numpy(float), lb0["win_rate"].to_numpy(), atol=1e-9)
    else:
        t_ae = None
        print("(alpaca_eval is not importable here: run this script with a Python where `pip install "
              "alpaca-eval` worked to time it too)")
    rows.append((f"farm leaderboard + {args.n_boot}-resample bootstrap", t_ours))
    t_loop, ci_pd = timed(lambda: pandas_bootstrap(df, args.loop_boot, seed=1), 1)
    t_loop *= args.n_boot / args.loop_boot  # the loop is linear in resamples
    scaled = "" if args.loop_boot == args.n_boot else f" (timed {args.loop_boot}, scaled)"
    rows.append((f"plain pandas loop, {args.n_boot}-resample bootstrap{scaled}", t_loop))

    assert np.allclose(wr_pd.loc[lb0.index].to_numpy(), lb0["win_rate"].to_numpy(), atol=1e-9)
    gap = np.abs(ci_pd.loc[lb.index, "low"].to_numpy() - lb["win_rate_ci_low"].to_numpy())
    print(f"\n{'implementation':<66} {'median s':>9}")
    for name, t in rows:
        print(f"{name:<66} {t:>9.3f}")
    print(f"\nbootstrap: plain loop / ours = {t_loop / t_ours:.0f}×; ours {'<' if t_ours < 2 else '>='} 2 s target")
    if t_ae is not None:
        print(f"no interval: alpaca_eval / ours = {t_ae / t_ours0:.1f}×; "
              f"alpaca_eval (no interval) / ours (with {args.n_boot}-resample interval) = {t_ae / t_ours:.1f}×")
    print(f"lower interval ends, plain loop vs ours (different resamples): median |Δ| = {np.median(gap):.2f} "
          f"points (Monte-Carlo noise of a 2.5% quantile from {args.loop_boot} resamples)")
    assert np.median(gap) < 1.0, "the two bootstraps disagree beyond Monte-Carlo noise"


if __name__ == "__main__":
    main()
