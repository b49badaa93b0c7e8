"""`farm leaderboard ANNOTATIONS...`: AlpacaEval-compatible leaderboard with bootstrap intervals and LC win rate.

    farm leaderboard results/*/annotations.json.gz --lc --out leaderboard.csv --plot winrates.png
    farm leaderboard ann.jsonl --compare published_leaderboard.csv      # rank correlation with a published CSV
    farm leaderboard ann.jsonl --paired dpo ppo                         # paired test of two models
    farm leaderboard simulated/*.jsonl --compare-annotations human/*.jsonl   # rank correlation, bootstrap
"""

from __future__ import annotations

import argparse

import pandas as pd

from farm.io import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farm leaderboard", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("annotations", nargs="+", help="annotation files: ours (p_output_2) or AlpacaEval "
                   "annotations.json[.gz] (output_1 = baseline, output_2 = model)")
    p.add_argument("--out", help="write the leaderboard CSV here (AlpacaEval layout: first column = model)")
    p.add_argument("--plot", help="write a PNG of win rates with 95%% intervals")
    p.add_argument("--length-plot", help="write a PNG of win rate against average output length")
    p.add_argument("--lc", action="store_true", help="add the length-controlled win rate (GLM on length)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of instructions (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--baseline", help="keep only annotations against this baseline (generator_1)")
    p.add_argument("--sort", default=None, help="column to sort by (default win_rate, or LC with --lc)")
    p.add_argument("--compare", metavar="CSV", help="also print Spearman/Kendall with this leaderboard CSV "
                   "(interval from both tables' standard errors)")
    p.add_argument("--compare-annotations", nargs="+", metavar="FILE",
                   help="also print Spearman/Kendall with the leaderboard of these annotation files (e.g. human "
                        "labels of the same outputs), bootstrap over instructions shared by both")
    p.add_argument("--paired", nargs=2, metavar=("MODEL_A", "MODEL_B"),
                   help="also print a paired comparison (bootstrap and t-test) of two models")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from farm.eval.winrate import compare_models, format_table, leaderboard, read_leaderboard_csv, to_frame

    frame = to_frame(args.annotations)
    sort_by = args.sort or ("length_controlled_winrate" if args.lc else "win_rate")
    lb = leaderboard(frame, n_boot=args.n_boot, seed=args.seed, lc=args.lc, sort_by=sort_by,
                     baseline=args.baseline)
    print(format_table(lb))
    if args.out:
        atomic_write_text(args.out, lb.to_csv())
        print(f"\nwrote {args.out}")
    if args.plot or args.length_plot:
        from farm.eval import plots

        if args.plot:
            plots.winrate_bars(lb, args.plot)
            print(f"wrote {args.plot}")
        if args.length_plot:
            plots.winrate_vs_length(lb, args.length_plot)
            print(f"wrote {args.length_plot}")
    if args.compare:
        from farm.eval.correlation import correlate_tables

        other = read_leaderboard_csv(args.compare)
        corr = correlate_tables(lb, other, seed=args.seed)
        print(f"\nrank correlation with {args.compare} on {int(corr['n_models'].iloc[0])} common models "
              f"(95% interval from both tables' SEs):")
        print(corr[["value", "ci_low", "ci_high"]].round(3).to_string())
    if args.compare_annotations:
        from farm.eval.correlation import correlate_annotations

        corr = correlate_annotations(frame, args.compare_annotations, n_boot=max(args.n_boot, 100), seed=args.seed)
        print(f"\nrank correlation with the leaderboard of {len(args.compare_annotations)} other annotation file(s) "
              f"on {int(corr['n_models'].iloc[0])} common models (95% bootstrap interval over instructions):")
        print(corr[["value", "ci_low", "ci_high"]].round(3).to_string())
    if args.paired:
        row = compare_models(frame, *args.paired, seed=args.seed)
        print("\npaired comparison on common instructions:")
        with pd.option_context("display.width", 200):
            print(row.round(4).to_string(index=False))
    return 0
