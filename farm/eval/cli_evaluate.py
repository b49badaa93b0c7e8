"""`farm evaluate`: annotate model outputs against a baseline with a judge or pool, then print the leaderboard.

    farm evaluate --model-outputs dpo.json ppo.json --baseline-outputs davinci003.json \
        --annotator gpt4o_mini_basic --out-dir results/eval --lc --plot results/eval/winrates.png

Outputs are AlpacaEval `model_outputs.json` files (instruction, input?, output, generator?); several files give
several models. Each model output is joined to the baseline output of the same instruction + input and becomes
a Pair(output_1 = baseline, output_2 = model), as in AlpacaEval. Verdicts are cached in `--out-dir/cache.sqlite`,
so an interrupted run resumes and a re-run asks the judge nothing. Writes `annotations.jsonl` and
`leaderboard.csv` to `--out-dir`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from farm.errors import FarmError
from farm.io import atomic_write_text, read_model_outputs, write_annotations
from farm.types import Pair


def build_pairs(model_files: Sequence[str | Path], baseline_file: str | Path,
                max_instructions: int | None = None) -> tuple[list[Pair], dict[str, int]]:
    """Pairs (output_1 = baseline, output_2 = model) for every model output whose instruction + input the
    baseline has; returns the pairs and, per model, how many of its outputs had no baseline (skipped)."""
    baseline: dict[tuple[str, str], dict] = {}
    for i, rec in enumerate(read_model_outputs(baseline_file), 1):
        key = (rec["instruction"], rec["input"])
        if key in baseline:
            raise FarmError("the same instruction + input appears twice in the baseline outputs", file=baseline_file,
                            line=i, field="instruction")
        baseline[key] = rec
    order = {k: i for i, k in enumerate(baseline)}
    pairs: list[Pair] = []
    skipped: dict[str, int] = {}
    seen_models: set[str] = set()
    for path in model_files:
        recs = read_model_outputs(path)
        seen: set[tuple[str, str]] = set()
        for line, rec in enumerate(recs, 1):
            key = (rec["instruction"], rec["input"])
            if key in seen:
                raise FarmError("the same instruction + input appears twice for one model", file=path, line=line,
                                field="instruction")
            seen.add(key)
        models = {r["generator"] for r in recs}
        if models & seen_models:
            raise FarmError(f"model name(s) {sorted(models & seen_models)} appear in two files", file=path,
                            field="generator", hint="give each model file a distinct 'generator'")
        seen_models |= models
        for rec in recs:
            key = (rec["instruction"], rec["input"])
            base = baseline.get(key)
            if base is None or (max_instructions is not None and order[key] >= max_instructions):
                if base is None:
                    skipped[rec["generator"]] = skipped.get(rec["generator"], 0) + 1
                continue
            pairs.append(Pair(instruction=rec["instruction"], input=rec["input"], output_1=base["output"],
                              output_2=rec["output"], generator_1=base["generator"], generator_2=rec["generator"],
                              id=str(order[key]),
                              meta={"dataset": rec["dataset"]} if "dataset" in rec else {}))
    if not pairs:
        raise FarmError("no model output matches a baseline instruction (joined on instruction + input)",
                        file=model_files[0] if model_files else None)
    return pairs, skipped


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="farm evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-outputs", nargs="+", required=True, help="AlpacaEval model_outputs.json file(s)")
    p.add_argument("--baseline-outputs", required=True, help="the baseline's model_outputs.json")
    p.add_argument("--annotator", required=True, help="judge or pool: a name in annotator_prompts/, a folder, "
                   "or a simulated judge (see `farm ls`)")
    p.add_argument("--out-dir", default="eval_results", help="where annotations.jsonl and leaderboard.csv go")
    p.add_argument("--cache", help="verdict cache (default OUT_DIR/cache.sqlite)")
    p.add_argument("--seed", type=int, default=0, help="seed of the judges' randomness and of the bootstrap")
    p.add_argument("--max-instructions", type=int, help="only the first N baseline instructions (a dry run)")
    p.add_argument("--lc", action="store_true", help="add the length-controlled win rate")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of instructions (0 = none)")
    p.add_argument("--plot", help="write a PNG of win rates with 95%% intervals")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    pairs, skipped = build_pairs(args.model_outputs, args.baseline_outputs, args.max_instructions)
    for model, n in skipped.items():
        print(f"farm evaluate: {model}: {n} output(s) have no baseline output for their instruction; skipped",
              file=sys.stderr)
    # lazily: the annotators pull in HTTP clients and judge configs that `farm leaderboard` never needs
    from farm.annotators import AnnotationRun, annotate_pairs, load_annotator

    judge = load_annotator(args.annotator)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = AnnotationRun()
    annotations = annotate_pairs(pairs, judge, seed=args.seed, cache_path=args.cache or out_dir / "cache.sqlite",
                                 progress=not args.no_progress, run=run)
    write_annotations(out_dir / "annotations.jsonl", annotations)

    from farm.eval.winrate import format_table, leaderboard

    lb = leaderboard(annotations, n_boot=args.n_boot, seed=args.seed, lc=args.lc,
                     sort_by="length_controlled_winrate" if args.lc else "win_rate")
    atomic_write_text(out_dir / "leaderboard.csv", lb.to_csv())
    print(format_table(lb))
    print(f"\nannotated by {getattr(judge, 'name', args.annotator)}: {run.summary()}")
    print(f"wrote {out_dir / 'annotations.jsonl'} and {out_dir / 'leaderboard.csv'}")
    if args.plot:
        from farm.eval.plots import winrate_bars

        winrate_bars(lb, args.plot)
        print(f"wrote {args.plot}")
    return 0
