"""`farm evaluate`: annotate model outputs against a baseline with a judge or pool, then print the leaderboard.

    farm evaluate --model-outputs dpo.json ppo.json --baseline-outputs davinci003.json \
        --annotator gpt4o_mini_basic --out-dir results/eval --lc --plot results/eval/winrates.png
    farm evaluate --checkpoint runs/x/dpo/model --eval-set eval_sets/tasks_eval.json \
        --baseline-outputs baseline.json --annotator gold --out-dir results/eval   # generate first

Outputs are AlpacaEval `model_outputs.json` files (instruction, input?, output, generator?); several files give
several models. Each model output is joined to the baseline output of the same instruction + input and becomes
a Pair(output_1 = baseline, output_2 = model), as in AlpacaEval. Verdicts are cached in `--out-dir/cache.sqlite`,
so an interrupted run resumes and a re-run asks the judge nothing. Writes `annotations.jsonl` and
`leaderboard.csv` to `--out-dir`.

With `--checkpoint DIR` (repeatable) and `--eval-set FILE` (records with instruction, input?), each checkpoint
first answers the eval set (greedy unless `--temperature` > 0; `farm.models.generation`), and its outputs are
written to `--out-dir/outputs_<name>.json` (AlpacaEval format, generator = the checkpoint's folder name, or its
parent's when the folder is called `model`) before being judged like any other model outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

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


def checkpoint_name(path: str | Path) -> str:
    """runs/x/dpo/model → dpo; runs/x/dpo → dpo."""
    p = Path(path).resolve()
    return p.parent.name if p.name in ("model", "final") else p.name


def generate_outputs(checkpoint: str | Path, eval_set: str | Path, out_path: Path, *, max_new_tokens: int,
                     temperature: float, seed: int, progress: bool) -> Path:
    """Answer every instruction of the eval set with the checkpoint; write AlpacaEval model_outputs.json."""
    from farm.io import read_records, write_model_outputs
    from farm.models.generation import generate_texts
    from farm.models.loading import load_causal_lm

    records = read_records(eval_set)
    if not records:
        raise FarmError("empty eval set", file=eval_set)
    for i, r in enumerate(records, 1):
        if not isinstance(r.get("instruction"), str):
            raise FarmError("missing required field", file=eval_set, line=i, field="instruction")
    model, tokenizer = load_causal_lm(str(checkpoint), device="auto")
    texts = generate_texts(model, tokenizer, records, max_new_tokens=max_new_tokens, greedy=temperature <= 0,
                           temperature=max(temperature, 1e-5), seed=seed, progress=progress)
    name = checkpoint_name(checkpoint)
    return write_model_outputs(out_path, [{"instruction": r["instruction"], "input": r.get("input", "") or "",
                                           "output": t, "generator": name} for r, t in zip(records, texts)])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="farm evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-outputs", nargs="+", default=[], help="AlpacaEval model_outputs.json file(s)")
    p.add_argument("--checkpoint", action="append", default=[], help="a model folder to generate outputs from "
                   "(repeatable; needs --eval-set)")
    p.add_argument("--eval-set", help="instructions for --checkpoint (JSON/JSONL: instruction, input?)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="generation length for --checkpoint")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default) for --checkpoint")
    p.add_argument("--baseline-outputs", required=True, help="the baseline's model_outputs.json")
    p.add_argument("--annotator", required=True, help="judge or pool: a name in annotator_prompts/, a folder, "
                   "or a simulated judge (see `farm ls`)")
    p.add_argument("--out-dir", default="eval_results", help="where annotations.jsonl and leaderboard.csv go")
    p.add_argument("--cache", help="verdict cache (default OUT_DIR/cache.sqlite)")
    p.add_argument("--seed", type=int, default=0, help="seed of the judges' randomness and of the bootstrap")
    p.add_argument("--max-instructions", type=int, help="only the first N baseline instructions (a dry run)")
    p.add_argument("--lc", action="store_true", help="add the length-controlled win rate")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of instructions (0 = none)")
    p.add_argument("--both-orders", action="store_true", help="ask every pair in both positions; the leaderboard "
                   "counts each pair once (mean of the two verdicts) and the judge's position consistency is printed")
    p.add_argument("--plot", help="write a PNG of win rates with 95%% intervals")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.model_outputs and not args.checkpoint:
        p.error("give --model-outputs and/or --checkpoint")
    if args.checkpoint and not args.eval_set:
        p.error("--checkpoint needs --eval-set")
    out_dir = Path(args.out_dir)
    model_files = list(args.model_outputs)
    for ckpt in args.checkpoint:
        path = out_dir / f"outputs_{checkpoint_name(ckpt)}.json"
        model_files.append(str(generate_outputs(ckpt, args.eval_set, path, max_new_tokens=args.max_new_tokens,
                                                temperature=args.temperature, seed=args.seed,
                                                progress=not args.no_progress)))
        print(f"wrote {path}")

    pairs, skipped = build_pairs(model_files, args.baseline_outputs, args.max_instructions)
    for model, n in skipped.items():
        print(f"farm evaluate: {model}: {n} output(s) have no baseline output for their instruction; skipped",
              file=sys.stderr)
    # lazily: the annotators pull in HTTP clients and judge configs that `farm leaderboard` never needs
    from farm.annotators import AnnotationRun, annotate_pairs, load_annotator

    judge = load_annotator(args.annotator)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = AnnotationRun()
    if args.both_orders:
        from farm.eval.consistency import with_both_orders

        pairs = with_both_orders(pairs)
    annotations = annotate_pairs(pairs, judge, seed=args.seed, cache_path=args.cache or out_dir / "cache.sqlite",
                                 progress=not args.no_progress, run=run)
    write_annotations(out_dir / "annotations.jsonl", annotations)

    from farm.eval.winrate import format_table, leaderboard

    scored = annotations
    if args.both_orders:
        from farm.eval.consistency import consistency_table, fold_orders

        scored = fold_orders(annotations)
        with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 200):
            print("position consistency per judge (pairs asked in both orders):")
            print(consistency_table(annotations).to_string() + "\n")
    lb = leaderboard(scored, n_boot=args.n_boot, seed=args.seed, lc=args.lc,
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
