"""`farm annotate`: annotate pairs with a judge or pool; cached, resumable, one annotation per pair.

    farm annotate --pairs pairs.jsonl --annotator gpt4o_mini_basic --out annotations.jsonl
    farm annotate --pairs pairs.json --annotator path/to/my_judge --out a.json model=gpt-4o concurrency=16

Pairs: JSON/JSONL records with instruction, input?, output_1, output_2, generator_1?, generator_2?, id?.
The cache (default: annotation_cache.sqlite beside --out) makes a second run issue no requests and lets a
killed run resume where it stopped. The output is written atomically at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from farm.annotators.engine import AnnotationRun, annotate_pairs
from farm.annotators.loader import load_annotator
from farm.config import parse_overrides
from farm.errors import FarmError
from farm.io import read_pairs, write_annotations


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm annotate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="JSON/JSONL file of pairs")
    ap.add_argument("--annotator", required=True, help="judge or pool: a name in annotator_prompts/ or a folder")
    ap.add_argument("--out", required=True, help="annotations file (.jsonl or .json, optionally .gz)")
    ap.add_argument("--seed", type=int, default=0, help="seed of member draws and output-order swaps")
    ap.add_argument("--cache", default=None, help="SQLite cache (default: annotation_cache.sqlite beside --out)")
    ap.add_argument("--no-cache", action="store_true", help="ask the judge for every pair")
    ap.add_argument("--concurrency", type=int, default=None, help="requests in flight per judge")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--both-orders", action="store_true", help="also ask each pair with its outputs swapped")
    ap.add_argument("overrides", nargs="*", help="judge config overrides key=value (e.g. model=gpt-4o)")
    args = ap.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        raise FarmError("must be >= 1", field="--concurrency")
    out = Path(args.out)
    cache = None if args.no_cache else Path(args.cache) if args.cache else out.parent / "annotation_cache.sqlite"
    pairs = read_pairs(args.pairs)
    if args.both_orders:  # each pair, then its swapped copy; `farm agreement` reports position consistency
        from farm.eval.consistency import with_both_orders
        pairs = with_both_orders(pairs)
    annotator = load_annotator(args.annotator, **parse_overrides(args.overrides))
    run = AnnotationRun()
    annotations = annotate_pairs(pairs, annotator, seed=args.seed, cache_path=cache,
                                 progress=not args.no_progress, concurrency=args.concurrency, run=run)
    write_annotations(out, annotations)
    print(f"{annotator.name}: {run.summary()}\n→ {out}" + (f" (cache {cache})" if cache else ""))
    return 0
