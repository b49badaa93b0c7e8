"""Long work made visible: a tqdm bar on a terminal; elsewhere (CI, nohup, a log file) one line about every 10
seconds with the step, the rate and the time left, on stderr and on the `farm` logger (a compare run writes that
logger to its `run.log`).

    bar = Progress(total=3000, desc="sft")
    for step in range(3000):
        ...
        bar.update(loss=f"{loss:.4f}")
    bar.close()
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("farm")


def _duration(seconds: float) -> str:
    """
    >>> _duration(42.4), _duration(125), _duration(7300)
    ('42s', '2m05s', '2h01m')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """`enabled`: show progress at all (a bar on a TTY, else log lines every `every` seconds)."""

    def __init__(self, total: int, desc: str, *, start: int = 0, enabled: bool = True, every: float = 10.0,
                 unit: str = "step", tty: bool | None = None, clock=time.monotonic):
        self.total, self.desc, self.n, self.unit, self.every, self.clock = total, desc, start, unit, every, clock
        self.start_n, self.t0 = start, clock()
        self.last = self.t0
        self.enabled = enabled
        self.info: dict[str, Any] = {}
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None
        if enabled and self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, leave=False, unit=unit)

    def update(self, n: int = 1, **info: Any) -> None:
        self.n += n
        self.info.update(info)
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix(**{k: str(v) for k, v in info.items()})
            return
        now = self.clock()
        if self.enabled and (now - self.last >= self.every or self.n == self.total):
            self.last = now
            self._line(now)

    def line(self) -> str:
        return self._text(self.clock())

    def _text(self, now: float) -> str:
        done = self.n - self.start_n
        rate = done / max(now - self.t0, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("inf")
        extra = "".join(f" {k} {v}" for k, v in self.info.items())
        eta = _duration(left) if left != float("inf") else "?"
        return (f"{self.desc}: {self.unit} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"
                f" {rate:.2f} {self.unit}s/s, {_duration(now - self.t0)} elapsed, ETA {eta}{extra}")

    def _line(self, now: float) -> None:
        text = self._text(now)
        print(text, file=sys.stderr, flush=True)
        log.info(text)  # a compare run writes the `farm` logger to its run.log

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_libraries() -> None:
    """transformers 5 draws a progress bar for every weight load/save; our own bars say what matters. The `farm`
    command calls this at start, and so does each worker process a compare run spawns."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
