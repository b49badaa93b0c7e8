"""Running an annotator over pairs: the run's cache, concurrency, progress bar and accounting.

`annotate_pairs` sets a *run context* (a contextvar) for the duration of one call; every LLM judge reached
through pools and noise wrappers (which only know the `Annotator` protocol) finds the cache, the concurrency
override, the progress bar and the counters there. Called outside `annotate_pairs`, a judge runs uncached with
its own counters, so `judge.annotate(pairs)` still works as the protocol promises.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from farm.types import Annotation, Annotator, Pair

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from farm.annotators.cache import VerdictCache

T = TypeVar("T")


@dataclass
class AnnotationRun:
    """What one run cost. `requests` counts HTTP attempts (retries included); cost is what this run spent
    (cache hits are free), in dollars, from the token counts the server reported."""

    pairs: int = 0
    requests: int = 0
    retries: int = 0
    parse_retries: int = 0
    cache_hits: int = 0
    invalid: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        rate = self.pairs / self.seconds if self.seconds > 0 else float("inf")
        return (f"{self.pairs} pairs in {self.seconds:.1f} s ({rate:.1f} pairs/s): {self.requests} requests "
                f"({self.retries} retries, {self.parse_retries} re-asks), {self.cache_hits} cache hits, "
                f"{self.invalid} invalid ({self.failed} failed requests); tokens in {self.input_tokens:,} / "
                f"out {self.output_tokens:,}; cost ${self.cost:.4f}")


@dataclass
class RunContext:
    run: AnnotationRun = field(default_factory=AnnotationRun)
    cache: VerdictCache | None = None
    concurrency: int | None = None
    bar: Any = None  # a tqdm bar, or None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, **increments: float) -> None:
        """Add to the run's counters (thread-safe: pool members run in threads)."""
        with self.lock:
            for k, v in increments.items():
                setattr(self.run, k, getattr(self.run, k) + v)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None and n:
            with self.lock:
                r = self.run
                self.bar.set_postfix_str(f"{r.requests} req, {r.retries} retries, {r.cache_hits} cached, "
                                         f"{r.failed} failed, ${r.cost:.4f}", refresh=False)
                self.bar.update(n)


_CONTEXT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("farm_annotation_run", default=None)


_LAST_RUN: list[AnnotationRun] = []


def last_run() -> AnnotationRun | None:
    """The `AnnotationRun` of the most recent `annotate_pairs` call in this process (for callers that did not
    pass `run=`)."""
    return _LAST_RUN[-1] if _LAST_RUN else None


def current_context() -> RunContext:
    """The active run's context, or a fresh uncached one."""
    return _CONTEXT.get() or RunContext()


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is already running in this
    thread (a notebook): then in a helper thread with its own loop, the run context carried along."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(ctx.run, lambda: asyncio.run(make())).result()


def in_threads(calls: list[Callable[[], T]]) -> list[T]:
    """Run independent calls concurrently in threads, each in a copy of the current context (so pool members
    judged at once share the run's cache and counters); results in order, the first error re-raised."""
    if len(calls) <= 1:
        return [c() for c in calls]
    with ThreadPoolExecutor(len(calls)) as ex:
        futures = [ex.submit(contextvars.copy_context().run, c) for c in calls]
        return [f.result() for f in futures]


def annotate_pairs(pairs: Sequence[Pair], annotator: Annotator | str, *, seed: int = 0,
                   cache_path: str | Path | None = None, progress: bool = True, concurrency: int | None = None,
                   run: AnnotationRun | None = None) -> list[Annotation]:
    """One annotation per pair, same order. With `cache_path`, verdicts are read from and committed to a
    persistent cache as they land (a re-run makes no requests; a killed run resumes). Pass an `AnnotationRun`
    as `run` to read the run's requests, cache hits, invalid count, tokens, cost and seconds afterwards.

    `annotator`: an Annotator, or a name/folder for `load_annotator`. `concurrency` overrides every LLM judge's
    own limit of requests in flight.
    """
    if isinstance(annotator, str):
        from farm.annotators.loader import load_annotator

        annotator = load_annotator(annotator)
    pairs = list(pairs)
    run = run if run is not None else AnnotationRun()
    _LAST_RUN[:] = [run]
    cache = None
    if cache_path is not None:
        from farm.annotators.cache import VerdictCache

        cache = VerdictCache(cache_path)
    bar = None
    if progress and pairs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=f"annotate ({getattr(annotator, 'name', 'judge')})", unit="pair",
                   disable=not sys.stderr.isatty(), dynamic_ncols=True)
    ctx = RunContext(run=run, cache=cache, concurrency=concurrency, bar=bar)
    token = _CONTEXT.set(ctx)
    start = time.perf_counter()
    try:
        annotations = annotator.annotate(pairs, seed=seed)
    finally:
        _CONTEXT.reset(token)
        run.seconds += time.perf_counter() - start
        if bar is not None:
            bar.update(max(0, len(pairs) - bar.n))  # judges without a bar of their own (replay, synthetic)
            bar.close()
        if cache is not None:
            cache.close()
    if len(annotations) != len(pairs):
        raise RuntimeError(f"{annotator.name} returned {len(annotations)} annotations for {len(pairs)} pairs")
    run.pairs += len(pairs)
    run.invalid += sum(a.preference is None for a in annotations)
    return annotations


def annotate_frame(pairs: Sequence[Pair], annotator: Annotator | str, **kwargs: Any) -> pd.DataFrame:
    """`annotate_pairs` as a pandas DataFrame (columns of `Annotation.to_record`: p_output_2, preference,
    annotator, raw_completion, price_per_example, time_per_example...); the run is in `df.attrs["run"]`."""
    from farm.io import annotations_to_frame

    run = kwargs.pop("run", None) or AnnotationRun()
    df = annotations_to_frame(annotate_pairs(pairs, annotator, run=run, **kwargs))
    df.attrs["run"] = run.as_dict()
    return df
