"""The run context of one `annotate_pairs` call, and the helpers that carry it into threads and event loops.

`annotate_pairs` (farm/annotators/engine.py) sets a *run context* (a contextvar) for the duration of one call;
every LLM judge reached through pools and noise wrappers (which only know the `Annotator` protocol) finds the
cache, the concurrency override, the progress bar and the counters there. Called outside `annotate_pairs`, a
judge runs uncached with its own counters, so `judge.annotate(pairs)` still works as the protocol promises.

This module imports no other module of farm/annotators: the engine, the judges and the pools all import it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from farm.annotators.cache import VerdictCache
    from farm.annotators.ledger import SpendLedger

T = TypeVar("T")


@dataclass
class AnnotationRun:
    """What one run cost. `requests` counts HTTP attempts (retries included); cost is what this run spent
    (cache hits are free), in dollars, from the token counts the server reported: the sum of its annotations'
    `price_spent`. The `estimated_*` counters are filled by an estimate-only run (nothing sent)."""

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
    empty_outputs: int = 0
    truncated_outputs: int = 0
    estimated_requests: int = 0
    estimated_input_tokens: int = 0
    estimated_output_tokens: int = 0
    estimated_cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        rate = self.pairs / self.seconds if self.seconds > 0 else float("inf")
        notes = "".join(f"; {n} {what}" for n, what in ((self.empty_outputs, "empty outputs"),
                                                        (self.truncated_outputs, "outputs cut")) if n)
        return (f"{self.pairs} pairs in {self.seconds:.1f} s ({rate:.1f} pairs/s): {self.requests} requests "
                f"({self.retries} retries, {self.parse_retries} re-asks), {self.cache_hits} cache hits, "
                f"{self.invalid} invalid ({self.failed} failed requests); tokens in {self.input_tokens:,} / "
                f"out {self.output_tokens:,}; cost ${self.cost:.4f}{notes}")

    def estimate(self) -> str:
        """The estimate-only run's line: what asking would send and cost."""
        return (f"estimate: {self.pairs} pairs, {self.cache_hits} cached; {self.estimated_requests} requests, "
                f"~{self.estimated_input_tokens:,} input tokens (~4 characters each), at most "
                f"{self.estimated_output_tokens:,} output tokens (max_tokens); ~${self.estimated_cost:.4f} "
                f"(re-asks of unparseable answers and retries not included)")


@dataclass
class RunContext:
    run: AnnotationRun = field(default_factory=AnnotationRun)
    cache: VerdictCache | None = None
    concurrency: int | None = None
    bar: Any = None  # a tqdm bar, or None
    lock: threading.Lock = field(default_factory=threading.Lock)
    ledger: SpendLedger | None = None
    max_cost: float | None = None
    """dollars this run may spend: no request is sent whose estimated price would pass it"""
    estimate_only: bool = False
    """count what would be sent and spent, send nothing"""
    reserved: float = 0.0  # estimated price of the requests in flight

    def count(self, **increments: float) -> None:
        """Add to the run's counters (thread-safe: pool members run in threads)."""
        with self.lock:
            for k, v in increments.items():
                setattr(self.run, k, getattr(self.run, k) + v)

    def reserve(self, amount: float) -> bool:
        """Book a request's estimated price against the budget; False (nothing booked) if it would pass it."""
        with self.lock:
            if self.max_cost is not None and self.run.cost + self.reserved + amount > self.max_cost:
                return False
            self.reserved += amount
            return True

    def release(self, amount: float) -> None:
        with self.lock:
            self.reserved -= amount

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


@contextmanager
def active(ctx: RunContext) -> Iterator[RunContext]:
    """Make `ctx` the run context of this thread (and of the threads and loops started from it) until exit."""
    token = _CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.reset(token)
