"""Running an annotator over pairs: the run's cache, concurrency, progress bar and accounting.

`annotate_pairs` makes a `RunContext` (farm/annotators/context.py) active for the duration of one call; every
LLM judge reached through pools and noise wrappers finds the cache, the concurrency override, the progress bar
and the counters there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm.annotators.context import _LAST_RUN, AnnotationRun, RunContext, active
from farm.annotators.context import last_run as last_run  # re-exported: farm.annotators.last_run
from farm.types import Annotation, Annotator, Pair

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def annotate_pairs(pairs: Sequence[Pair] | pd.DataFrame, annotator: Annotator | str, *, seed: int = 0,
                   cache_path: str | Path | None = None, progress: bool = True, concurrency: int | None = None,
                   run: AnnotationRun | None = None, max_cost: float | None = None,
                   estimate_only: bool = False) -> list[Annotation]:
    """One annotation per pair, same order. With `cache_path`, verdicts are read from and committed to a
    persistent cache as they land (a re-run makes no requests; a killed run resumes), and every request is
    written to the spend ledger beside it (farm/annotators/ledger.py). Pass an `AnnotationRun` as `run` to read
    the run's requests, cache hits, invalid count, tokens, cost and seconds afterwards.

    `pairs`: Pairs, or a DataFrame with instruction, input?, output_1, output_2 (generator_1/2, id optional).
    `annotator`: an Annotator, or a name/folder for `load_annotator`. `concurrency` overrides every LLM judge's
    own limit of requests in flight. `max_cost`: dollars this call may spend; it stops (FarmError, finished
    verdicts cached) before a request whose estimated price would pass it. `estimate_only`: send nothing; the
    annotations are invalid placeholders and `run` holds the estimated requests, tokens and dollars.
    """
    if isinstance(annotator, str):
        from farm.annotators.loader import load_annotator

        annotator = load_annotator(annotator)
    pairs = pairs_of(pairs)
    run = run if run is not None else AnnotationRun()
    _LAST_RUN[:] = [run]
    if max_cost is not None and not max_cost >= 0:
        from farm.errors import FarmError

        raise FarmError(f"must be a number of dollars >= 0, got {max_cost}", field="max_cost")
    cache = ledger = None
    if cache_path is not None:
        from farm.annotators.cache import VerdictCache
        from farm.annotators.ledger import SpendLedger, ledger_path

        cache = VerdictCache(cache_path)
        if not estimate_only:
            ledger = SpendLedger(ledger_path(cache_path))
    bar = None
    if progress and pairs and not estimate_only:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=f"annotate ({getattr(annotator, 'name', 'judge')})", unit="pair",
                   disable=not sys.stderr.isatty(), dynamic_ncols=True)
    ctx = RunContext(run=run, cache=cache, concurrency=concurrency, bar=bar, ledger=ledger, max_cost=max_cost,
                     estimate_only=estimate_only)
    start = time.perf_counter()
    try:
        with active(ctx):
            annotations = annotator.annotate(pairs, seed=seed)
    finally:
        run.seconds += time.perf_counter() - start
        if bar is not None:
            bar.update(max(0, len(pairs) - bar.n))  # judges without a bar of their own (replay, synthetic)
            bar.close()
        if cache is not None:
            cache.close()
        if ledger is not None:
            ledger.close()
    if len(annotations) != len(pairs):
        raise RuntimeError(f"{annotator.name} returned {len(annotations)} annotations for {len(pairs)} pairs")
    run.pairs += len(pairs)
    run.invalid += sum(a.preference is None for a in annotations)
    return annotations


def pairs_of(pairs: Sequence[Pair] | pd.DataFrame) -> list[Pair]:
    """Pairs from a list of Pairs or a DataFrame (one pair per row; errors name the row and column)."""
    if hasattr(pairs, "to_dict") and hasattr(pairs, "columns"):
        from farm.io import pair_from_record

        records = pairs.to_dict("records")
        return [pair_from_record({k: v for k, v in r.items() if not _missing(v)}, "<DataFrame>", i)
                for i, r in enumerate(records, 1)]
    out = list(pairs)
    bad = next((i for i, p in enumerate(out) if not isinstance(p, Pair)), None)
    if bad is not None:
        from farm.errors import FarmError

        raise FarmError(f"expected a Pair, got {type(out[bad]).__name__} {out[bad]!r:.60}", line=bad + 1,
                        hint="pass Pairs, or a DataFrame with instruction, output_1, output_2 columns")
    return out


def _missing(v: Any) -> bool:
    """A DataFrame's empty cell (None or NaN)."""
    return v is None or (isinstance(v, float) and v != v)


def annotate_frame(pairs: Sequence[Pair] | pd.DataFrame, annotator: Annotator | str, **kwargs: Any) -> pd.DataFrame:
    """`annotate_pairs` as a pandas DataFrame (columns of `Annotation.to_record`: p_output_2, preference,
    annotator, raw_completion, price_per_example, price_spent, time_per_example...); the run is in
    `df.attrs["run"]`. `pairs` may be a DataFrame (columns instruction, input?, output_1, output_2)."""
    from farm.io import annotations_to_frame

    run = kwargs.pop("run", None) or AnnotationRun()
    df = annotations_to_frame(annotate_pairs(pairs, annotator, run=run, **kwargs))
    df.attrs["run"] = run.as_dict()
    return df
