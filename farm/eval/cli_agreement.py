"""`farm agreement --human FILE [--judge FILE ...]`: judge meta-evaluation against human labels.

    farm agreement --human ../shared/data/pandalm/testset-v1.json \
        --judge ../shared/data/pandalm/gpt-3.5-turbo-testset-v1.json \
        --judge ../shared/data/pandalm/pandalm-7b-testset-v1.json --out agreement.csv --plot agreement.png
    farm agreement --human labels.xlsx --tie-rule both          # humans only: inter-annotator agreement
    farm agreement --human labels.csv --human-columns instruction=prompt,label=verdict \
        --label-map "left=0,right=1,same=0.5" --judge annotations.jsonl

Human files: ours, PandaLM's, AlpacaEval cross-annotations, or a CSV/TSV/XLSX sheet with one row per annotation
(`farm.eval.humans`). Each judge row also says how consistent the judge is across positions (pairs asked in both
orders: `farm evaluate --both-orders`) and across repeats. Every figure is defined in farm/eval/agreement.py.
"""

from __future__ import annotations

import argparse

import pandas as pd

from farm.errors import FarmError
from farm.io import atomic_write_text

SHOWN = ["agreement", "agreement_ci_low", "agreement_ci_high", "agreement_no_ties", "agreement_soft",
         "agreement_loo", "bias", "variance", "p_prefer_longer", "p_prefer_first", "p_prefer_lists",
         "position_consistency", "self_consistency", "n_agree", "n_pairs", "n_parsed", "n_unparsed"]


def _mapping(text: str | None, what: str, value=str) -> dict | None:
    """'a=b,c=d' → {'a': 'b', 'c': 'd'} (values through `value`)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise FarmError(f"{what}: expected key=value, got '{item}'", field=what)
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = value(v.strip())
        except ValueError:
            raise FarmError(f"{what}: '{v}' is not a number", field=what) from None
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="farm agreement", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--human", required=True, help="human labels: ours ('human': [p, ...] per pair), PandaLM's "
                   "test set (annotator1..3), AlpacaEval cross-annotations, or CSV/TSV/XLSX (one row per label)")
    p.add_argument("--judge", action="append", default=[],
                   help="a judge's verdicts: PandaLM judge file (joined on idx) or annotation file; repeatable; "
                        "none = the humans row alone")
    p.add_argument("--tie-rule", choices=["expected", "skip", "both"], default="expected",
                   help="a tied human majority: expectation over the tied classes, skip the pair, or print both")
    p.add_argument("--human-columns", help="column mapping for a sheet, ours=theirs,... (e.g. label=verdict)")
    p.add_argument("--label-vocabulary", default="auto", help="auto | ab5 | arena | numeric (farm.eval.humans)")
    p.add_argument("--label-map", help="your own labels as label=p,... with p = P(output_2 better)")
    p.add_argument("--fit-pool", action="store_true", help="also fit a simulated annotator pool to these human "
                   "labels (member mix, flip rate, length/position weights; farm.eval.fit_pool) and report the fit")
    p.add_argument("--fit-pool-out", help="write the fitted pool as JSON")
    p.add_argument("--out", help="write the table as CSV")
    p.add_argument("--plot", help="write the table as a PNG")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of pairs for the interval")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from farm.eval.agreement import evaluate_judges

    vocabulary = _mapping(args.label_map, "--label-map", float) or args.label_vocabulary
    rules = ["expected", "skip"] if args.tie_rule == "both" else [args.tie_rule]
    tables = {rule: evaluate_judges(args.human, args.judge, n_boot=args.n_boot, seed=args.seed, tie_rule=rule,
                                    columns=_mapping(args.human_columns, "--human-columns"), vocabulary=vocabulary)
              for rule in rules}
    for rule, table in tables.items():
        shown = table[[c for c in SHOWN if c in table.columns]].copy()
        for c in ("n_agree", "n_pairs", "n_parsed", "n_unparsed"):
            shown[c] = shown[c].round().astype(int)
        print(f"tied human majorities: {rule}")
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format",
                               "{:.3f}".format):
            print(shown.T.to_string())
        if table.loc["humans", "n_pairs"] == 0:
            print("note: no pair has two human labels, so human agreement cannot be measured (NaN, not 100%)")
        print()
    if args.fit_pool or args.fit_pool_out:
        import json

        from farm.eval.agreement import read_humans
        from farm.eval.fit_pool import fit_pool

        fit = fit_pool(read_humans(args.human, columns=_mapping(args.human_columns, "--human-columns"),
                                   vocabulary=vocabulary), seed=args.seed)
        print(f"pool fitted to {fit.n_pairs_fit} labelled pairs, checked on {fit.n_pairs_held_out} held-out pairs:")
        print(fit.table().round(2).to_string())
        mix = ", ".join(f"{k} {v:.2f}" for k, v in fit.mix.items() if v >= 0.005)
        print(f"mix: {mix}; flip {fit.flip:.3f}; sharpness {fit.sharpness:.2f}; length x{fit.length_scale:.2f}; "
              f"position {fit.position_shift:+.2f}\n")
        if args.fit_pool_out:
            atomic_write_text(args.fit_pool_out, json.dumps(fit.to_record(), indent=1) + "\n")
            print(f"wrote {args.fit_pool_out}")
    table = tables[rules[0]] if len(rules) == 1 else pd.concat(tables, names=["tie_rule"])
    if args.out:
        atomic_write_text(args.out, table.to_csv())
        print(f"wrote {args.out}")
    if args.plot:
        from farm.eval.plots import agreement_table_plot

        agreement_table_plot(tables[rules[0]], args.plot)
        print(f"wrote {args.plot}")
    return 0
