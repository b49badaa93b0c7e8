"""`python -m farm.eval.cli_lc_reference FILES --name NAME`: (re)fit an LC reference and add it to a reference file.

    python -m farm.eval.cli_lc_reference --alpaca-eval ~/alpaca_eval \
        --source "tatsu-lab/alpaca_eval at cd543a1"   # rebuilds the shipped entry (AlpacaEval's own reference)
    python -m farm.eval.cli_lc_reference runs/eval/*/annotations.jsonl --name my_judge --out my_lc_reference.json
    farm leaderboard runs/eval/*/annotations.jsonl --lc --lc-reference my_lc_reference.json

What a reference holds and how it is fitted: farm/eval/lc_reference.py (your own models' annotations) and
farm/eval/lc_alpaca.py (AlpacaEval's, from an alpaca_eval checkout).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from farm.eval.lc_reference import DEFAULT_GAMED_X, DEFAULT_RIDGE, SHIPPED, fit_reference, save_reference


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m farm.eval.cli_lc_reference", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("annotations", nargs="*", help="annotation files of several models against one baseline")
    p.add_argument("--alpaca-eval", metavar="DIR", default=None,
                   help="rebuild AlpacaEval's reference from this alpaca_eval checkout instead (farm/eval/lc_alpaca.py)")
    p.add_argument("--name", default=None, help="the reference's name (e.g. the annotator; default alpaca_eval "
                                                "with --alpaca-eval)")
    p.add_argument("--out", default=str(SHIPPED), help="reference file to add it to (default: the shipped one)")
    p.add_argument("--exclude", nargs="*", default=[], help="models to leave out (e.g. ones kept for a check)")
    p.add_argument("--name-from", choices=["generator", "file"], default="file",
                   help="name models after their file/folder (default) or the generator field")
    p.add_argument("--source", default="", help="where the files came from (stored in the reference)")
    p.add_argument("--ridge", type=float, default=DEFAULT_RIDGE, help="ridge on the instruction difficulties")
    p.add_argument("--gamed-x", type=float, default=DEFAULT_GAMED_X, help="|tanh(std Δ)| of the gamed rows")
    args = p.parse_args(argv)
    if args.alpaca_eval:
        from farm.eval.lc_alpaca import build_alpaca_eval_reference

        ref = build_alpaca_eval_reference(args.alpaca_eval, name=args.name or "alpaca_eval",
                                          exclude=tuple(args.exclude or ["gpt4_gamed"]), ridge=args.ridge,
                                          source=args.source)
        path = save_reference(ref, args.out)
        c = ref.calibration
        print(f"{ref.name}: difficulty of {len(ref.difficulty)} instructions from {len(ref.models)} models, scaled "
              f"d = {c['a']:.4f} + {c['b']:.4f} d_raw (published LC of {c['n_models']} models reproduced to RMSE "
              f"{c['lc_rmse']:.3f}, unscaled {c['lc_rmse_unscaled']:.3f}); {len(ref.gamed)} gamed baselines; "
              f"wrote {path}")
        return 0
    if not args.annotations or not args.name:
        p.error("give annotation files and --name, or --alpaca-eval DIR")
    from farm.eval.frames import to_frame

    frame = to_frame(list(args.annotations), name_from=args.name_from)
    frame = frame[~frame["generator_2"].isin(args.exclude)]
    ref = fit_reference(frame, name=args.name, ridge=args.ridge, gamed_x=args.gamed_x, source=args.source)
    path = save_reference(ref, args.out)
    print(f"{ref.name}: {len(ref.models)} models against {ref.baseline}, {len(ref.difficulty)} instructions, "
          f"length slope {ref.slope:.3f}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
