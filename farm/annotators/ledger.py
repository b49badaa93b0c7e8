"""The spend ledger: an append-only JSONL file beside the verdict cache, one line per request event.

Every HTTP attempt writes a `sent` line before it goes out and an `answered` (tokens and dollars as the server
reported them) or `failed` line when it ends. Lines are single `write` calls on a file opened with O_APPEND, so
several processes can share one ledger and a kill -9 loses at most the line being written. What it tells that
the cache cannot:
- money spent by runs that were killed before their verdicts reached the cache (answered, then killed: the pair
  is asked again by the next run and paid twice; both payments are here);
- requests whose outcome is unknown: timed out, reset, or in flight when the process died. The server may have
  completed (and billed) them; the ledger bounds that spend by each request's estimated price.

Nothing secret goes in: judge name and identity, model, token counts, prices, the error *kind* (never its text).

    farm annotate --spend annotation_cache.sqlite     # what every run on this cache spent
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# failures after which the server may still have done (and billed) the work
MAYBE_BILLED = ("timeout", "connection", "malformed")


def ledger_path(cache_path: str | Path) -> Path:
    """The ledger beside a cache: annotation_cache.sqlite → annotation_cache.spend.jsonl."""
    p = Path(cache_path)
    return p.with_name(p.stem + ".spend.jsonl")


def estimate_tokens(text: str) -> int:
    """Tokens a judge's tokenizer would count, estimated without one: ~4 characters per token (English text with
    the GPT and Claude tokenizers), at least 1.

    >>> estimate_tokens("x" * 400), estimate_tokens("")
    (100, 1)
    """
    return max(1, round(len(text) / 4))


class SpendLedger:
    """Append events to the ledger file (thread-safe; one `os.write` per line)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.run = uuid.uuid4().hex[:12]
        self._fd: int | None = None  # opened on the first request (a run that sends nothing leaves no file)
        self._lock = threading.Lock()
        self._n = 0

    def _write(self, record: dict[str, Any]) -> None:
        line = (json.dumps({"t": round(time.time(), 3), "run": self.run, **record}, separators=(",", ":")) + "\n")
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            if self._fd >= 0:
                os.write(self._fd, line.encode())

    def sent(self, judge: str, identity: str, model: str, est_input: int, max_output: int, est_cost: float) -> str:
        with self._lock:
            self._n += 1
            req = f"{self.run}-{self._n}"
        self._write({"event": "sent", "req": req, "judge": judge, "identity": identity, "model": model,
                     "est_input_tokens": est_input, "max_output_tokens": max_output, "est_cost": est_cost})
        return req

    def answered(self, req: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        self._write({"event": "answered", "req": req, "input_tokens": input_tokens,
                     "output_tokens": output_tokens, "cost": cost})

    def failed(self, req: str, kind: str, status: int | None = None) -> None:
        self._write({"event": "failed", "req": req, "kind": kind, "status": status})

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._fd >= 0:
                os.close(self._fd)
            self._fd = -1


@dataclass
class SpendSummary:
    """What a ledger says, over every run that wrote to it."""

    runs: int = 0
    requests: int = 0
    answered: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unknown: int = 0
    """requests that timed out, were reset, or were in flight when their process died"""
    unknown_cost_max: float = 0.0
    """the most those could have cost (their estimated prices)"""
    failed: int = 0
    """requests the server refused (an HTTP error: not billed)"""

    def line(self) -> str:
        extra = (f"; {self.unknown} requests timed out or were cut off by a kill (up to ${self.unknown_cost_max:.4f} "
                 f"more if the server completed them)" if self.unknown else "")
        return (f"{self.runs} runs, {self.requests} requests: {self.answered} answered, ${self.cost:.4f} spent "
                f"(tokens in {self.input_tokens:,} / out {self.output_tokens:,}), {self.failed} refused{extra}")


def summarize(path: str | Path) -> SpendSummary:
    """Totals of a ledger file; a torn last line (a kill in the middle of a write) is skipped."""
    sent: dict[str, dict] = {}
    outcome: dict[str, dict] = {}
    runs = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs.add(rec.get("run"))
            if rec.get("event") == "sent":
                sent[rec["req"]] = rec
            elif rec.get("event") in ("answered", "failed"):
                outcome[rec["req"]] = rec
    s = SpendSummary(runs=len(runs), requests=len(sent))
    for req, rec in sent.items():
        out = outcome.get(req)
        if out is not None and out["event"] == "answered":
            s.answered += 1
            s.input_tokens += int(out["input_tokens"])
            s.output_tokens += int(out["output_tokens"])
            s.cost += float(out["cost"])
        elif out is None or out.get("kind") in MAYBE_BILLED:
            s.unknown += 1
            s.unknown_cost_max += float(rec.get("est_cost", 0.0))
        else:
            s.failed += 1
    return s
