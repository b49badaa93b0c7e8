"""Retrying transient request failures: exponential backoff with jitter, never shorter than the server's
`Retry-After`, bounded in count and in the longest single wait.

Backends turn their client's exceptions into two kinds:
- `TransientError`: worth retrying (429, 408, 409, 5xx, 529, timeouts, connection errors, malformed or empty
  responses). Carries the server's Retry-After when it sent one.
- `RejectedError`: this request will never succeed (400, 413, 422: e.g. a prompt longer than the context). The
  pair is recorded invalid with the error text (not cached, so a later run tries again).
Authentication and not-found errors are `FarmError`s: every request would fail, so the run stops at once (its
finished verdicts are already in the cache).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class TransientError(Exception):
    """`input_tokens`/`output_tokens`: usage the server reported on an answer we could not use (no choices):
    billed all the same, so counted as spent."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None,
                 input_tokens: int = 0, output_tokens: int = 0):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


class RejectedError(Exception):
    """The server refused this request for good (bad request, too long)."""


class RetriesExhausted(Exception):
    def __init__(self, last: TransientError, attempts: int):
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.last, self.attempts = last, attempts


@dataclass
class RetryPolicy:
    max_retries: int = 6
    """retries after the first attempt (so max_retries + 1 requests at most)"""
    backoff_base: float = 1.0
    """seconds before the first retry; doubles each time (with jitter in [0.5, 1.0) of it)"""
    backoff_max: float = 60.0
    """longest single wait in seconds, also the cap on a server's Retry-After"""


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI), `retry-after` as seconds or as an HTTP date.

    >>> parse_retry_after({"retry-after": "2"}), parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"})
    (2.0, 1.5)
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> parse_retry_after({}), parse_retry_after({"retry-after": "soon"}), parse_retry_after({"retry-after": "-3"})
    (None, None, None)
    """
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lower.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value).timestamp()
            except (TypeError, ValueError, IndexError):
                continue
            seconds = when - (time.time() if now is None else now)
        if seconds >= 0:
            return seconds
    return None


def backoff_delay(attempt: int, policy: RetryPolicy, jitter: float, retry_after: float | None = None) -> float:
    """Wait before retry number `attempt` (0-based): base·2^attempt scaled by `jitter` in [0, 1) into
    [0.5, 1.0) of it, capped at backoff_max, and at least the server's Retry-After (itself capped).

    >>> p = RetryPolicy(backoff_base=1.0, backoff_max=10.0)
    >>> [backoff_delay(a, p, jitter=0.0) for a in range(6)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    >>> backoff_delay(0, p, jitter=0.0, retry_after=3.0), backoff_delay(0, p, jitter=0.0, retry_after=99.0)
    (3.0, 10.0)
    """
    delay = min(policy.backoff_max, policy.backoff_base * 2.0 ** attempt * (0.5 + 0.5 * jitter))
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.backoff_max))
    return delay


async def call_with_retries(fn: Callable[[], Awaitable[T]], policy: RetryPolicy, jitter: Callable[[], float],
                            on_attempt: Callable[[int], None] | None = None) -> T:
    """Await `fn()`, retrying `TransientError`s with backoff; raise `RetriesExhausted` after the last one.

    `on_attempt(i)` is called before every attempt (i = 0 for the first), for request accounting.
    """
    for attempt in range(policy.max_retries + 1):
        if on_attempt:
            on_attempt(attempt)
        try:
            return await fn()
        except TransientError as e:
            if attempt == policy.max_retries:
                raise RetriesExhausted(e, attempt + 1) from None
            await asyncio.sleep(backoff_delay(attempt, policy, jitter(), e.retry_after))
    raise AssertionError("unreachable")  # pragma: no cover
