"""`farm annotate`: annotate pairs with a judge or pool; cached, resumable, one annotation per pair.

    farm annotate --pairs pairs.jsonl --annotator gpt4o_mini_basic --out annotations.jsonl
    farm annotate --pairs pairs.json --annotator path/to/my_judge --out a.json model=gpt-4o concurrency=16
    farm annotate --pairs pairs.jsonl --annotator gpt4o_mini_basic --out a.jsonl --estimate   # sends nothing
    farm annotate --pairs pairs.jsonl --annotator gpt4o_mini_basic --out a.jsonl --max-cost 2.50
    farm annotate --spend annotation_cache.sqlite            # what every run on this cache spent

Pairs: JSON/JSONL records with instruction, input?, output_1, output_2, generator_1?, generator_2?, id?.
The cache (default: annotation_cache.sqlite beside --out) makes a second run issue no requests and lets a
killed run resume where it stopped; the spend ledger beside it (annotation_cache.spend.jsonl) records every
request of every run, killed ones included. The output is written atomically at the end.

Exit status: 0 when every pair has a verdict, or when some requests failed for good (their pairs are invalid,
with the error; the count is printed) unless --strict; 1 with --strict and any failed pair; 2 when the run could
not finish (every request failed, the key was refused, the server is unreachable, the budget was reached, a bad
file or config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from farm.annotators.engine import AnnotationRun, annotate_pairs
from farm.annotators.loader import load_annotator
from farm.config import parse_overrides
from farm.errors import FarmError
from farm.io import read_pairs, write_annotations


def _spend(cache: str) -> int:
    from farm.annotators.ledger import ledger_path, summarize

    path = ledger_path(cache)
    if not path.is_file():
        raise FarmError("no spend ledger beside this cache", file=path,
                        hint="a ledger is written by every `farm annotate` run that uses a cache")
    print(f"{path}: {summarize(path).line()}")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="farm annotate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", help="JSON/JSONL file of pairs")
    ap.add_argument("--annotator", help="judge or pool: a name in annotator_prompts/ or a folder")
    ap.add_argument("--out", help="annotations file (.jsonl or .json, optionally .gz)")
    ap.add_argument("--seed", type=int, default=0, help="seed of member draws and output-order swaps")
    ap.add_argument("--cache", default=None, help="SQLite cache (default: annotation_cache.sqlite beside --out)")
    ap.add_argument("--no-cache", action="store_true", help="ask the judge for every pair")
    ap.add_argument("--concurrency", type=int, default=None, help="requests in flight per judge")
    ap.add_argument("--estimate", action="store_true",
                    help="print the requests, tokens and dollars the run would spend (cache hits free); send nothing")
    ap.add_argument("--max-cost", type=float, default=None, metavar="DOLLARS",
                    help="stop before a request whose estimated price would take this run past DOLLARS "
                         "(finished verdicts stay cached: re-run with a higher cap to go on)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any pair's request failed for good")
    ap.add_argument("--spend", metavar="CACHE", default=None, help="print what the ledger of CACHE says, then exit")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--both-orders", action="store_true", help="also ask each pair with its outputs swapped")
    ap.add_argument("overrides", nargs="*", help="judge config overrides key=value (e.g. model=gpt-4o)")
    args = ap.parse_intermixed_args(argv)  # key=value overrides may sit between the options
    if args.spend:
        return _spend(args.spend)
    for name in ("pairs", "annotator", "out"):
        if getattr(args, name) is None:
            raise FarmError("required", field=f"--{name}", hint="farm annotate --help")
    if args.concurrency is not None and args.concurrency < 1:
        raise FarmError("must be >= 1", field="--concurrency")
    if args.max_cost is not None and not args.max_cost >= 0:
        raise FarmError("must be a number of dollars >= 0", field="--max-cost")
    out = Path(args.out)
    cache = None if args.no_cache else Path(args.cache) if args.cache else out.parent / "annotation_cache.sqlite"
    pairs = read_pairs(args.pairs)
    if args.both_orders:  # each pair, then its swapped copy; `farm agreement` reports position consistency
        from farm.eval.consistency import with_both_orders
        pairs = with_both_orders(pairs)
    annotator = load_annotator(args.annotator, **parse_overrides(args.overrides))
    run = AnnotationRun()
    if args.estimate:
        annotate_pairs(pairs, annotator, seed=args.seed, cache_path=cache if cache and cache.exists() else None,
                       progress=False, concurrency=args.concurrency, run=run, estimate_only=True)
        print(f"{annotator.name}: {run.estimate()}")
        return 0
    annotations = annotate_pairs(pairs, annotator, seed=args.seed, cache_path=cache,
                                 progress=not args.no_progress, concurrency=args.concurrency, run=run,
                                 max_cost=args.max_cost)
    write_annotations(out, annotations)
    print(f"{annotator.name}: {run.summary()}\n→ {out}" + (f" (cache {cache})" if cache else ""))
    failed = sum("error" in a.meta for a in annotations)
    if failed:
        print(f"warning: {failed} of {len(annotations)} pairs have no verdict: their requests failed for good "
              f"(the error is their raw_completion; not cached, so a re-run asks again)", file=sys.stderr)
        if args.strict:
            return 1
    return 0
