"""`farm agreement --human FILE --judge FILE [--judge FILE ...]`: judge meta-evaluation against human labels.

    farm agreement --human ../shared/data/pandalm/testset-v1.json \
        --judge ../shared/data/pandalm/gpt-3.5-turbo-testset-v1.json \
        --judge ../shared/data/pandalm/pandalm-7b-testset-v1.json --out agreement.csv --plot agreement.png

Every figure is defined in docs/evaluation.md and in farm/eval/agreement.py.
"""

from __future__ import annotations

import argparse

import pandas as pd

from farm.io import atomic_write_text


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="farm agreement", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--human", required=True, help="human labels: ours ('human': [p, ...] per pair), PandaLM's "
                   "test set (annotator1..3), or AlpacaEval cross-annotations")
    p.add_argument("--judge", action="append", default=[], required=True,
                   help="a judge's verdicts: PandaLM judge file (joined on idx) or annotation file; repeatable")
    p.add_argument("--out", help="write the table as CSV")
    p.add_argument("--plot", help="write the table as a PNG")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of pairs for the interval")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from farm.eval.agreement import evaluate_judges

    table = evaluate_judges(args.human, args.judge, n_boot=args.n_boot, seed=args.seed)
    shown = table.copy()
    for c in ("n_agree", "n_pairs", "n_parsed", "n_unparsed"):
        shown[c] = shown[c].round().astype(int)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(shown.T.to_string())
    if args.out:
        atomic_write_text(args.out, table.to_csv())
        print(f"\nwrote {args.out}")
    if args.plot:
        from farm.eval.plots import agreement_table_plot

        agreement_table_plot(table, args.plot)
        print(f"wrote {args.plot}")
    return 0
