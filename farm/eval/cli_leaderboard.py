"""`farm leaderboard ANNOTATIONS...`: AlpacaEval-compatible leaderboard with bootstrap intervals and LC win rate.

    farm leaderboard results/*/annotations.json.gz --lc --out leaderboard.csv --plot winrates.png
    farm leaderboard ann.jsonl --compare published_leaderboard.csv      # rank correlation with a published CSV
    farm leaderboard ann.jsonl --paired dpo ppo                         # paired test of two models
    farm leaderboard simulated/*.jsonl --compare-annotations human/*.jsonl   # rank correlation, bootstrap
    farm leaderboard pairwise/*.jsonl --bt --style-control               # Bradley–Terry (Elo) among many models
    farm leaderboard results/*/alpaca_eval_gpt4/annotations.json --name-from file   # rows named by folder

Rows are named after each file's generator_2, or after the file/folder with --name-from file (and whenever two
files carry the same generator name); two inputs of the same name are an error unless --merge.
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
    p.add_argument("--lc", action="store_true", help="add the length-controlled win rate (AlpacaEval's GLM)")
    p.add_argument("--lc-reference", default="auto", help="LC reference: auto (the shipped AlpacaEval reference where it knows the "
                   "instructions), none, a shipped name, or a file from python -m farm.eval.cli_lc_reference")
    p.add_argument("--name-from", choices=["generator", "file"], default="generator",
                   help="name rows after generator_2 (default) or after the file/folder")
    p.add_argument("--merge", action="store_true", help="inputs with the same name are one model: add them up")
    p.add_argument("--bt", action="store_true", help="Bradley–Terry (Elo-scale) ratings over all pairwise "
                   "annotations instead of win rates against one baseline")
    p.add_argument("--style-control", action="store_true", help="with --bt: length and markdown covariates")
    p.add_argument("--ties", choices=["half", "drop"], default="half", help="with --bt: a tie is half a win "
                   "for each side (Arena) or left out")
    p.add_argument("--anchor", help="with --bt: the model rated 1000 (default: mean rating 1000)")
    p.add_argument("--exact-bootstrap", action="store_true", help="with --bt: refit every resample (slower)")
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
    from farm.eval.winrate import (
        compare_models,
        format_table,
        input_notes,
        leaderboard,
        read_leaderboard_csv,
        to_frame,
    )

    frame = to_frame(args.annotations, name_from=args.name_from, merge=args.merge)
    if args.bt:
        return _bt(frame, args)
    sort_by = args.sort or ("length_controlled_winrate" if args.lc else "win_rate")
    reference = None if args.lc_reference == "none" else args.lc_reference
    lb = leaderboard(frame, n_boot=args.n_boot, seed=args.seed, lc=args.lc, sort_by=sort_by,
                     baseline=args.baseline, lc_reference=reference)
    print(format_table(lb))
    for note in input_notes(frame):
        print(f"note: {note}")
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


def _bt(frame: pd.DataFrame, args: argparse.Namespace) -> int:
    from farm.eval.bt import bradley_terry

    res = bradley_terry(frame, n_boot=args.n_boot, seed=args.seed, style=args.style_control, anchor=args.anchor,
                        ties=args.ties, bootstrap="exact" if args.exact_bootstrap else "one-step")
    with pd.option_context("display.width", 200, "display.float_format", "{:.1f}".format):
        print(res.ratings.to_string())
    if len(res.style_coefficients):
        print("\nstyle coefficients (logit per standard deviation of the normalised difference, output_2 − output_1):")
        print(res.style_coefficients.round(4).to_string())
    if args.out:
        atomic_write_text(args.out, res.ratings.to_csv())
        print(f"\nwrote {args.out}")
    return 0
